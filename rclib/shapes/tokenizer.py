"""A word-level tokenizer over ShapesWorld's closed vocabulary, as a transformers tokenizer.

Two flavours share one vocabulary: the LLaVA one prepends BOS (a prompt continues into the answer),
the CLIP one also appends EOS, where CLIP's text tower pools. Ids are fixed: 0 pad, 1 unk,
2 <image>, 3 bos, 4 eos, then the world's words (EOS is not id 2, which transformers' CLIP text
model treats as the legacy "pool at the highest id" switch).
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from rclib.shapes.world import vocabulary

PAD, UNK, IMAGE, BOS, EOS = "<pad>", "<unk>", "<image>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, UNK, IMAGE, BOS, EOS)  # in id order
CLIP_MAX_LENGTH = 77  # CLIP text context (as OpenAI CLIP): the longest caption (14 objects) is 69 words + bos/eos


def build_tokenizer(append_eos: bool) -> PreTrainedTokenizerFast:
    """The world tokenizer: lowercases, splits on spaces and punctuation, maps words to ids."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(vocabulary()))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    template = f"{BOS} $A {EOS}" if append_eos else f"{BOS} $A"
    core.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        extra_special_tokens={"image_token": IMAGE},
        model_max_length=CLIP_MAX_LENGTH if append_eos else 2048,
        padding_side="right" if append_eos else "left",  # generation continues at the right end
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE]})
    assert tokenizer.convert_tokens_to_ids(IMAGE) == 2 and tokenizer.eos_token_id == 4, (
        "special token ids moved; keep SPECIAL_TOKENS in id order at the head of the vocabulary"
    )
    return tokenizer
