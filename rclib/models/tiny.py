"""Small LLaVA-1.5-architecture models built from shapes, with random weights and nothing downloaded.

A transformers ``CLIPModel`` (vision and text towers), a ``LlavaForConditionalGeneration`` whose vision tower
has the CLIP's vision config, their ``LlavaProcessor`` and word-level tokenizers. The test fixtures, ``rclib
speed`` (LLaVA-1.5's shapes) and the ShapesWorld model (:mod:`rclib.shapes.build`) build their models here;
each brings its own language model config and tokenizer words.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ClipShapes:
    """The shapes of a CLIP and of the LLaVA vision tower on it (defaults: the test fixtures' tiny model)."""

    image_size: int = 64  # pixels a side: (64 / 8)^2 = 64 patch tokens
    patch_size: int = 8
    vision_width: int = 32
    vision_mlp: int = 64
    vision_layers: int = 3
    vision_heads: int = 4
    text_width: int = 32
    text_mlp: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_positions: int = 77  # CLIP's context length
    text_vocab: int | None = None  # None: the tokenizer's vocabulary
    joint_dim: int = 16  # CLIP's joint embedding space

    @property
    def n_tokens(self) -> int:
        """Patch tokens of one image, the [CLS] token not counted."""
        return (self.image_size // self.patch_size) ** 2


def text_words(texts: list[str]) -> list[str]:
    """The distinct words and punctuation runs of ``texts``, sorted: a vocabulary that covers them."""
    return sorted({word for text in texts for word in re.findall(r"\w+|[^\w\s]+", text)})


def word_tokenizer(words: list[str], special: list[str], template: str, unk_token: str, **special_tokens):
    """A transformers fast tokenizer, word level: ``special`` then ``words`` (those not special) are its vocabulary;
    ``template`` adds bos / eos (tokenizers' ``TemplateProcessing`` syntax); ``special_tokens``: its named tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(special + [word for word in words if word not in special])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=unk_token))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, vocab[t]) for t in special if t in template])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=unk_token, **special_tokens)


def vision_config(shapes: ClipShapes):
    """The ``CLIPVisionConfig`` of ``shapes`` (the CLIP's vision tower and the LLaVA's)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=shapes.vision_width, intermediate_size=shapes.vision_mlp,
                            num_hidden_layers=shapes.vision_layers, num_attention_heads=shapes.vision_heads,
                            image_size=shapes.image_size, patch_size=shapes.patch_size,
                            projection_dim=shapes.joint_dim, hidden_act="quick_gelu")


def text_config(shapes: ClipShapes, tokenizer):
    """The ``CLIPTextConfig`` of ``shapes``, its special token ids the tokenizer's (CLIP pools the text at eos)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=shapes.text_vocab or len(tokenizer), hidden_size=shapes.text_width,
                          intermediate_size=shapes.text_mlp, num_hidden_layers=shapes.text_layers,
                          num_attention_heads=shapes.text_heads, max_position_embeddings=shapes.text_positions,
                          projection_dim=shapes.joint_dim, hidden_act="quick_gelu", pad_token_id=tokenizer.pad_token_id,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)


def reseed(seed: int | None) -> None:
    """Seed torch's generator (None: draw on from where it stands)."""
    if seed is not None:
        torch.manual_seed(seed)


def build_clip(shapes: ClipShapes, tokenizer, seed: int | None = 0):
    """A ``CLIPModel`` of ``shapes`` with random weights (eval mode), its text tower for ``tokenizer``."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(text_config=text_config(shapes, tokenizer).to_dict(),
                        vision_config=vision_config(shapes).to_dict(), projection_dim=shapes.joint_dim)
    reseed(seed)
    return CLIPModel(config).eval()


def build_llava(shapes: ClipShapes, llm, image_token_id: int, seed: int | None = 0, **options):
    """A ``LlavaForConditionalGeneration`` with random weights (eval mode): the CLIP vision tower of ``shapes``,
    the language model of ``llm`` (a ``LlamaConfig``), one image token per patch; ``options``: ``LlavaConfig``'s."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(vision_config=vision_config(shapes).to_dict(), text_config=llm, image_token_id=image_token_id,
                         image_seq_length=shapes.n_tokens, **options)
    reseed(seed)
    return LlavaForConditionalGeneration(config).eval()


def tie_vision_towers(clip, llava) -> None:
    """Copy the CLIP's vision tower weights into the LLaVA's (same config, same parameter names), so that the
    CLIP's text tower scores exactly the patches the LLaVA sees."""
    llava.model.vision_tower.load_state_dict(clip.vision_model.state_dict())


def image_processor(side: int):
    """A ``CLIPImageProcessor`` to ``side`` x ``side`` pixels (shortest edge, then a centre crop), CLIP's mean
    and std."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})


def llava_processor(tokenizer, image_size: int, patch_size: int, chat_template: str | None = None):
    """A ``LlavaProcessor``: ``<image>`` in a prompt becomes one token per patch ([CLS] dropped, as the "default"
    feature strategy drops it)."""
    from transformers import LlavaProcessor

    return LlavaProcessor(image_processor=image_processor(image_size), tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=chat_template)  # +1: CLIP's CLS, as llava-hf processors


def build_llava_next(shapes: ClipShapes, llm, image_token_id: int, grid_pinpoints: list, seed: int | None = 0,
                     video: bool = False):
    """A ``LlavaNextForConditionalGeneration`` with random weights (eval mode): the CLIP vision tower of ``shapes``
    on a base view and anyres tiles of ``grid_pinpoints`` (pixel sizes, multiples of the image size); ``video``:
    a ``LlavaNextVideoForConditionalGeneration`` (the same image path)."""
    import transformers

    kind = "LlavaNextVideo" if video else "LlavaNext"
    config = getattr(transformers, f"{kind}Config")(vision_config=vision_config(shapes).to_dict(), text_config=llm,
                                                    image_token_index=image_token_id, image_grid_pinpoints=grid_pinpoints)
    reseed(seed)
    return getattr(transformers, f"{kind}ForConditionalGeneration")(config).eval()


def llava_next_processor(tokenizer, shapes: ClipShapes, grid_pinpoints: list, chat_template: str | None = None,
                         video: bool = False):
    """A ``LlavaNextProcessor``: a base view and tiles of ``shapes.image_size`` pixels; ``<image>`` becomes one token
    per patch of the base view and of the unpadded tiles, plus one per tile row (the newline). ``video``: a
    ``LlavaNextVideoProcessor`` (the tokenizer needs a <video> token)."""
    import transformers

    side = shapes.image_size
    images = transformers.LlavaNextImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                                  image_grid_pinpoints=grid_pinpoints)
    options = dict(image_processor=images, tokenizer=tokenizer, patch_size=shapes.patch_size,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=chat_template)
    if video:
        videos = transformers.LlavaNextVideoVideoProcessor(size={"shortest_edge": side},
                                                           crop_size={"height": side, "width": side})
        return transformers.LlavaNextVideoProcessor(video_processor=videos, **options)
    return transformers.LlavaNextProcessor(**options)


def siglip_vision_config(shapes: ClipShapes, head: bool = True):
    """The ``SiglipVisionConfig`` of ``shapes`` (no [CLS]; ``head``: its attention-pooling head)."""
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(hidden_size=shapes.vision_width, intermediate_size=shapes.vision_mlp,
                              num_hidden_layers=shapes.vision_layers, num_attention_heads=shapes.vision_heads,
                              image_size=shapes.image_size, patch_size=shapes.patch_size, vision_use_head=head)


def build_siglip(shapes: ClipShapes, tokenizer, seed: int | None = 0):
    """A ``SiglipModel`` of ``shapes`` with random weights (eval mode); its text width is its vision width (the
    text head projects into the vision tower's space, as SigLIP's does)."""
    from transformers import SiglipConfig, SiglipModel, SiglipTextConfig

    text = SiglipTextConfig(vocab_size=shapes.text_vocab or len(tokenizer), hidden_size=shapes.text_width,
                            intermediate_size=shapes.text_mlp, num_hidden_layers=shapes.text_layers,
                            num_attention_heads=shapes.text_heads, max_position_embeddings=shapes.text_positions,
                            projection_size=shapes.vision_width, pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)  # no bos
    config = SiglipConfig(text_config=text.to_dict(), vision_config=siglip_vision_config(shapes).to_dict())
    reseed(seed)
    return SiglipModel(config).eval()


def build_llava_onevision(shapes: ClipShapes, llm, image_token_id: int, grid_pinpoints: list, max_tiles: int,
                          seed: int | None = 0):
    """A ``LlavaOnevisionForConditionalGeneration`` with random weights (eval mode): a SigLIP vision tower of
    ``shapes`` (no head, every token a patch), anyres tiles of ``grid_pinpoints``, "anyres_max_``max_tiles``"."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    config = LlavaOnevisionConfig(vision_config=siglip_vision_config(shapes, head=False).to_dict(), text_config=llm,
                                  image_token_index=image_token_id, image_grid_pinpoints=grid_pinpoints,
                                  vision_aspect_ratio=f"anyres_max_{max_tiles}", vision_feature_layer=-1,
                                  vision_feature_select_strategy="full")
    reseed(seed)
    return LlavaOnevisionForConditionalGeneration(config).eval()


def tie_siglip_tower(siglip, llava) -> None:
    """Copy the SigLIP's vision tower weights (its pooling head aside) into the LLaVA-OneVision's."""
    weights = {k: v for k, v in siglip.vision_model.state_dict().items() if not k.startswith("head.")}
    llava.model.vision_tower.load_state_dict(weights)


def onevision_processor(tokenizer, shapes: ClipShapes, grid_pinpoints: list, max_tiles: int,
                        chat_template: str | None = None):
    """A ``LlavaOnevisionProcessor``: a base view and tiles of ``shapes.image_size`` pixels, SigLIP's mean and std
    (0.5), anyres_max_``max_tiles``."""
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    side = shapes.image_size
    images = LlavaOnevisionImageProcessor(size={"height": side, "width": side}, image_grid_pinpoints=grid_pinpoints,
                                          image_mean=[0.5] * 3, image_std=[0.5] * 3)
    videos = LlavaOnevisionVideoProcessor(size={"height": side, "width": side})  # the processor requires one
    return LlavaOnevisionProcessor(image_processor=images, tokenizer=tokenizer, video_processor=videos,
                                   num_image_tokens=shapes.n_tokens,
                                   vision_feature_select_strategy="full", chat_template=chat_template,
                                   vision_aspect_ratio=f"anyres_max_{max_tiles}")


QWEN_SPECIAL = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]  # Qwen2.5-VL's chat and vision markers
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ part['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def qwen_tokenizer(words: list[str]):
    """A word-level tokenizer with Qwen2.5-VL's markers as its special tokens (end of turn <|im_end|>)."""
    names = ("unk", "pad", "im_start", "eos", "vision_start_token", "vision_end_token", "image_token", "video_token")
    named = dict(zip(names, QWEN_SPECIAL, strict=True))
    return word_tokenizer(words + ["user", "assistant"], QWEN_SPECIAL, "$A", "<unk>", eos_token=named.pop("eos"),
                          pad_token=named.pop("pad"), extra_special_tokens={k: v for k, v in named.items() if k != "unk"})


def build_qwen2_5_vl(shapes: ClipShapes, tokenizer, seed: int | None = 0):
    """A ``Qwen2_5_VLForConditionalGeneration`` with random weights (eval mode): a ViT of ``shapes`` (patch size,
    width, layers; window attention except in its last block), a 2 x 2 merger into a tiny Qwen2 LLM with M-RoPE."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL}
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = dict(depth=shapes.vision_layers, hidden_size=shapes.vision_width, intermediate_size=shapes.vision_mlp,
                  num_heads=shapes.vision_heads, out_hidden_size=32, patch_size=shapes.patch_size, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=4 * shapes.patch_size,
                  fullatt_block_indexes=[shapes.vision_layers - 1])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"])
    reseed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def qwen2_5_vl_processor(tokenizer, shapes: ClipShapes, min_pixels: int, max_pixels: int):
    """A ``Qwen2_5_VLProcessor``: images resized within [min_pixels, max_pixels] to multiples of 2 patches, one
    <|image_pad|> per merged 2 x 2 group."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    options = dict(patch_size=shapes.patch_size, merge_size=2, temporal_patch_size=2)
    images = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, **options)
    return Qwen2_5_VLProcessor(image_processor=images, tokenizer=tokenizer,
                               video_processor=Qwen2VLVideoProcessor(**options), chat_template=QWEN_CHAT_TEMPLATE)
