"""The model the end-to-end rows of ``rclib speed`` run: LLaVA-1.5's or LLaVA-NeXT's architecture at
:class:`ModelShapes` with random weights (:mod:`rclib.models.tiny`), and random photographs' worth of pixels to
feed it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from rclib.models import tiny
from rclib.models.compressed import CompressedModel
from rclib.models.text import SYSTEM_PROMPT, TransformersTextTower
from rclib.speed.config import QUESTION, ModelShapes

LLAVA_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]  # Vicuna's, and LLaVA's image token
CLIP_SPECIAL = ["<|endoftext|>", "<|startoftext|>"]


def build_llava(shapes: ModelShapes, device: torch.device, dtype: torch.dtype, seed: int = 0) -> CompressedModel:
    """LLaVA-1.5's architecture (LLaVA-NeXT's where ``shapes.tiles`` is set) with random weights: CLIP vision and
    text towers, a Llama of ``shapes.lm``; tokenizers whose words are the benchmark's prompt."""
    words = tiny.text_words([SYSTEM_PROMPT, QUESTION, "USER ASSISTANT :"])
    tokenizer = tiny.word_tokenizer(words, LLAVA_SPECIAL, "<s> $A", "<unk>", bos_token="<s>", eos_token="</s>",
                                    pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    clip_tokenizer = tiny.word_tokenizer(words, CLIP_SPECIAL, "<|startoftext|> $A <|endoftext|>", "<|endoftext|>",
                                         bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                         pad_token="<|endoftext|>")
    llm = shapes.lm.llama_config()
    llm.bos_token_id, llm.eos_token_id, llm.pad_token_id = 1, 2, 3
    model, processor = llava_and_processor(shapes, llm, tokenizer, seed)
    model = model.to(device, dtype)
    model.generation_config.eos_token_id = None  # every answer runs its full length: timings compare
    # the CLIP whose text tower scores the patches; of its vision side only the head is used (no layers built)
    clip = tiny.build_clip(replace(shapes.clip, vision_layers=0), clip_tokenizer, seed=None).to(device, dtype)
    return CompressedModel(model, processor, TransformersTextTower(clip, clip_tokenizer), name=f"random {shapes.lm}",
                           image_preprocess="pad" if shapes.tiles is None else "crop",  # LLaVA-1.5's pad, NeXT's anyres
                           prompt_format="vicuna_v1")  # as LLaVA-1.5 and LLaVA-NeXT (Vicuna) were evaluated


def llava_and_processor(shapes: ModelShapes, llm, tokenizer, seed: int) -> tuple:
    """The transformers LLaVA of ``shapes`` (LLaVA-NeXT's where ``shapes.tiles`` is set) and its processor."""
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    if shapes.tiles is None:
        return (tiny.build_llava(shapes.clip, llm, image_token_id, seed),
                tiny.llava_processor(tokenizer, shapes.image_size, shapes.patch_size))
    return (tiny.build_llava_next(shapes.clip, llm, image_token_id, shapes.grid_pinpoints, seed),
            tiny.llava_next_processor(tokenizer, shapes.clip, shapes.grid_pinpoints))


def random_images(count: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """``count`` random RGB photographs' worth of pixels of ``size`` (height, width), uint8 HWC."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(*size, 3), dtype=np.uint8) for _ in range(count)]
