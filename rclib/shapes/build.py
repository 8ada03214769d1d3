"""The ShapesWorld models, built from configs in the formats of the real checkpoints.

`build_clip` gives a `transformers.CLIPModel` (like openai/clip-vit-large-patch14-336) and
`build_llava` a `LlavaForConditionalGeneration` (like llava-hf/llava-1.5-7b-hf) whose vision tower has
the same config, both through :mod:`rclib.models.tiny`; this module holds what is the shipped model's own:
its shapes, its language model config and its prompt. `tie_vision_towers` copies the CLIP vision weights
into the LLaVA so that the CLIP text tower scores exactly the patches the LLaVA sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    CLIPImageProcessor,
    CLIPModel,
    LlamaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from rclib.models import tiny
from rclib.models.tiny import tie_vision_towers
from rclib.shapes.tokenizer import CLIP_MAX_LENGTH, IMAGE, build_tokenizer
from rclib.shapes.world import IMAGE_SIZE, PATCH_SIZE

PROMPT_TEMPLATE = "USER: <image>\n{question} ASSISTANT:"  # LLaVA-1.5's, without the system line
CHAT_TEMPLATE = (  # renders [{"role": "user", "content": [image, text]}] as PROMPT_TEMPLATE
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% else %} ASSISTANT: {% for item in message['content'] %}{% if item['type'] == 'text' %}"
    "{{ item['text'] }}{% endif %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


@dataclass(frozen=True)
class ShapesModelConfig:
    vision_width: int = 128  # CLIP vision hidden size
    vision_layers: int = 4  # the LLaVA reads layer -2 (output of layer 3), the text score and [CLS] layer 4
    vision_heads: int = 4
    text_width: int = 128  # CLIP text tower hidden size
    text_layers: int = 2
    text_heads: int = 4
    projection_dim: int = 64  # CLIP joint embedding space
    lm_width: int = 128  # Llama hidden size
    lm_layers: int = 4  # layer 0 joins a name's two words, layer 1 finds the object (grounded), 2-3 answer
    lm_heads: int = 4
    lm_mlp: int = 384  # Llama intermediate size
    lm_rope_theta: float = 1e9  # most rotary frequencies barely turn over ~200 positions: question words match image tokens by content


def clip_shapes(cfg: ShapesModelConfig) -> tiny.ClipShapes:
    """The CLIP side of ``cfg`` on the world's images: MLPs 4x their width, the world tokenizer's context."""
    return tiny.ClipShapes(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_width=cfg.vision_width,
                           vision_mlp=4 * cfg.vision_width, vision_layers=cfg.vision_layers,
                           vision_heads=cfg.vision_heads, text_width=cfg.text_width, text_mlp=4 * cfg.text_width,
                           text_layers=cfg.text_layers, text_heads=cfg.text_heads, text_positions=CLIP_MAX_LENGTH,
                           joint_dim=cfg.projection_dim)


def image_processor() -> CLIPImageProcessor:
    return tiny.image_processor(IMAGE_SIZE)


def build_clip(cfg: ShapesModelConfig, tokenizer: PreTrainedTokenizerFast) -> CLIPModel:
    return tiny.build_clip(clip_shapes(cfg), tokenizer, seed=0)


def build_llava(cfg: ShapesModelConfig, tokenizer: PreTrainedTokenizerFast) -> LlavaForConditionalGeneration:
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.lm_width,
        intermediate_size=cfg.lm_mlp,
        num_hidden_layers=cfg.lm_layers,
        num_attention_heads=cfg.lm_heads,
        num_key_value_heads=cfg.lm_heads,
        max_position_embeddings=1024,  # 576 image tokens + a multi-turn conversation
        rope_theta=cfg.lm_rope_theta,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = tiny.build_llava(clip_shapes(cfg), text, tokenizer.convert_tokens_to_ids(IMAGE), seed=1,
                             projector_hidden_act="gelu", vision_feature_select_strategy="default",
                             vision_feature_layer=-2)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = 3
    return model


def build_processor(tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
    """`<image>` in a prompt expands to NUM_PATCHES image tokens (CLS dropped by the "default" strategy)."""
    return tiny.llava_processor(tokenizer, IMAGE_SIZE, PATCH_SIZE, CHAT_TEMPLATE)


def build_all(cfg: ShapesModelConfig = ShapesModelConfig()):
    """Fresh (clip, clip_tokenizer, llava, processor), vision towers tied."""
    clip_tokenizer = build_tokenizer(append_eos=True)
    llava_tokenizer = build_tokenizer(append_eos=False)
    clip = build_clip(cfg, clip_tokenizer)
    llava = build_llava(cfg, llava_tokenizer)
    tie_vision_towers(clip, llava)
    return clip, clip_tokenizer, llava, build_processor(llava_tokenizer)
