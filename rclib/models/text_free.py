"""A text score without a text tower: rclib's extension of RC, not from the paper (docs/method.md).

RC's text score is the cosine between the question's CLIP text embedding and each patch in CLIP's joint space.
A model with no CLIP text tower (Qwen2.5-VL) has no such space. Two training-free substitutes read only what any
LLaVA-like model has, each [B, N] with higher = more relevant, a drop-in for ``Encoded.text_sim``:

- "embedding" (:func:`embedding_score`): the cosine between the mean of the question's LLM input embeddings and
  each visual token after the projector, in the LLM's own input space;
- "attention" (:func:`attention_score`): the attention the question's tokens pay each image token in an early
  decoder layer (:func:`layer_attention`), from one prefill of the full prompt with all N image tokens.

Both read the question's content words (:func:`content_tokens`: no special token, stop word or punctuation). On
ShapesWorld the embedding mean over every token recovers 19% of the CLIP score's top-16 evidence, over the content
words 46%; the attention of every question token 53%, of the content words 69%
(benchmarks/results/text-free-scores.md). The functions take plain tensors and modules: a family builds the inputs
(its projector, its prompt, its positions) and calls them.
"""
from __future__ import annotations

import string

import torch

from rclib.models.text import text_similarity

TEXT_SCORES = ("embedding", "attention")
ATTENTION_LAYER = 1  # the decoder layer (0-based) "attention" reads: the second, the one FastV reads in LLaVA-1.5-7B;
# in ShapesWorld's 4-layer LLM the best of the four, and layers 2 and 3 rank the evidence below the [CLS] attention
# NLTK's English stop words without the contraction pieces: what a question says besides what it is about
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself it
its itself they them their theirs themselves what which who whom this that these those am is are was were be been
being have has had having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off over under again
further then once here there when where why how all any both each few more most other some such no nor not only own
same so than too very can will just should now
""".split())


def question_ids(tokenizer, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The questions as the LLM's tokenizer cuts them, no special tokens added: ids [B, T] long, right-padded with
    0, and mask [B, T] bool (True on the question's tokens)."""
    rows = [torch.tensor(tokenizer(q, add_special_tokens=False)["input_ids"], dtype=torch.long) for q in questions]
    T = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for b, row in enumerate(rows):
        ids[b, :len(row)], mask[b, :len(row)] = row, True
    return ids, mask


def content_tokens(tokenizer, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the question tokens of ``mask`` that carry content: not a special token, not a stop word
    (:data:`STOP_WORDS`), not punctuation alone, each token read as the tokenizer decodes it alone. A question
    with no such token keeps all of ``mask``. ids [B, T] and mask [B, T] as :func:`question_ids` makes them."""
    special = set(tokenizer.all_special_ids)

    def carries(token: int) -> bool:
        word = tokenizer.decode([token]).strip().lower()
        return token not in special and word not in STOP_WORDS and word.strip(string.punctuation) != ""

    content = mask & torch.tensor([[carries(int(t)) for t in row] for row in ids], dtype=torch.bool).view(ids.shape)
    return torch.where(content.any(1, keepdim=True), content, mask)


def embedding_score(question_embeds: torch.Tensor, mask: torch.Tensor, visual_embeds: torch.Tensor) -> torch.Tensor:
    """[B, N] float32 cosine between the mean of each question's token embeddings and each visual token.

    question_embeds [B, T, H]: the question's ids through the LLM's input embedding table; mask [B, T] bool: the
    tokens the mean reads (:func:`content_tokens`); visual_embeds [B, N, H]: the visual tokens after the projector
    (the LLM's input).
    """
    weights = mask.float()[:, :, None]  # [B, T, 1]
    mean = (question_embeds.float() * weights).sum(1) / weights.sum(1).clamp(min=1)  # [B, H]
    return text_similarity(mean, visual_embeds)


def question_places(input_ids: torch.Tensor, mask: torch.Tensor, question: torch.Tensor, question_mask: torch.Tensor,
                    read: torch.Tensor | None = None) -> torch.Tensor:
    """[B, L] bool: where each prompt holds its question, the last run of the question's ids among its real places.

    input_ids [B, L] and mask [B, L] (1 = real) the LLM's input ids; question [B, T] and question_mask [B, T]
    the question's ids (:func:`question_ids`); read [B, T] bool: the question's tokens to mark (None: all of
    question_mask; :func:`content_tokens` for the content words). Raises a ValueError for a prompt that does not
    hold its question.
    """
    read = question_mask if read is None else read
    places = torch.zeros_like(input_ids, dtype=torch.bool)
    for b in range(len(input_ids)):
        ids = question[b][question_mask[b]].to(input_ids.device)  # [T_b]
        windows = input_ids[b].unfold(0, len(ids), 1)  # [L - T_b + 1, T_b]
        real = mask[b].bool().unfold(0, len(ids), 1).all(1)
        found = torch.nonzero((windows == ids).all(1) & real).flatten()
        if not len(found):
            raise ValueError(f"prompt {b} does not hold its question's {len(ids)} tokens in one run; pass the ids "
                             "the LLM reads and the question as asked")
        start = int(found[-1])
        places[b, start:start + len(ids)] = read[b][question_mask[b]].to(input_ids.device)
    return places


class StopForward(Exception):
    """Raised by :func:`layer_attention`'s hook once its layer has run: the layers after it are not needed."""


def layer_attention(language_model, embeds: torch.Tensor, mask: torch.Tensor, layer: int,
                    position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[B, heads, L, L] float32: the attention weights of decoder layer ``layer`` (0-based) in the language
    model's own forward (its masks, its rotary positions), with eager attention for this call; the later layers do
    not run.

    language_model: a transformers decoder (LlamaModel, Qwen2Model, ...) with ``layers`` and a ``config``;
    embeds [B, L, H] the LLM's input, mask [B, L] (1 = real); position_ids: the family's positions (Qwen2.5-VL's
    rotary axes), None for cumsum(mask) - 1, as ``generate`` numbers a left-padded batch.
    """
    if position_ids is None:
        position_ids = (mask.long().cumsum(1) - 1).clamp(min=0)
    grabbed = []

    def grab(module, args, output):
        grabbed.append(output[1])  # (attn_output, attn_weights): the weights under eager attention
        raise StopForward

    handle = language_model.layers[layer].self_attn.register_forward_hook(grab)
    config = language_model.config
    implementation = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False)
    except StopForward:
        pass
    finally:
        handle.remove()
        config._attn_implementation = implementation
    return grabbed[0].float()


def attention_score(attention: torch.Tensor, query: torch.Tensor, image: torch.Tensor, n_image: int) -> torch.Tensor:
    """[B, N] float32: the attention the query places pay each image token, mean over the heads and the queries.

    attention [B, heads, L, L] one layer's weights (:func:`layer_attention`); query [B, L] bool the places whose
    rows are read (the question's content words: :func:`question_places`); image [B, L] long the image token
    index 0..N-1 at each place, -1 elsewhere; n_image N.
    """
    rows = query.float()[:, :, None]  # [B, L, 1]
    paid = (attention.float().mean(1) * rows).sum(1) / rows.sum(1).clamp(min=1)  # [B, L] mean over the query rows
    out = paid.new_zeros(len(paid), n_image + 1)  # one column more, where the places of no image token land
    return out.scatter_(1, torch.where(image < 0, n_image, image).to(paid.device), paid)[:, :n_image]
