"""What a checkpoint's config.json says before anything loads: is it LLaVA-1.5, and does its text tower fit it.

A LLaVA-1.5 checkpoint (7B or 13B, llava-hf format) is recognised from its config wherever it lies (registry
name, hub id in the local cache, folder) and gets LLaVA-1.5's evaluation input: images padded to a square,
the vicuna_v1 prompt. The text tower must be a CLIP whose vision tower has the LLaVA's shape (image size, patch,
width, depth); a checkpoint outside the registry must name one (``text_encoder=``).
"""
from __future__ import annotations

import json
from pathlib import Path

from rclib.models.families import FAMILIES
from rclib.models.compressed import no_text_tower
from rclib.models.registry import CLIP_L14_336, LLAVA15_INPUT, MODELS, TEXT_TOWERS, is_llava15, resolve, vision_shape

LLAVA15_TEXT_TOWERS = ("clip-vit-large-patch14-336", "open_clip-vit-large-patch14-336")


def config_of(source: str | Path, file: str = "config.json") -> dict | None:
    """A checkpoint's JSON config from a folder or the local Hugging Face cache (never the network); None if absent."""
    if isinstance(source, str) and source in MODELS:
        source = resolve(MODELS[source].llava)
    path = Path(str(source)).expanduser() / file
    if not path.is_file():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(str(source), file)
        except ValueError:  # not a hub id
            return None
        path = Path(cached) if isinstance(cached, str) else None
    return json.loads(path.read_text(encoding="utf-8")) if path else None


def input_format(pretrained: str | Path) -> dict:
    """LLaVA-1.5's image preprocessing and prompt for a recognised checkpoint outside the registry, else {}."""
    if isinstance(pretrained, str) and pretrained in MODELS:
        return {}  # the registry says
    return dict(LLAVA15_INPUT) if is_llava15(config_of(pretrained)) else {}


def text_tower_shape(text_encoder: str) -> tuple | None:
    """(image size, patch, width, layers) of a text tower's CLIP vision tower, when its config is local."""
    spec = TEXT_TOWERS.get(text_encoder)
    if spec is not None and spec.kind == "open_clip":
        return CLIP_L14_336 if spec.source == "ViT-L-14-336-quickgelu" else None
    source = resolve(spec.source) if spec else text_encoder
    open_clip = config_of(source, "open_clip_config.json")
    if open_clip:
        cfg = open_clip.get("model_cfg", {}).get("vision_cfg", {})
        return cfg.get("image_size"), cfg.get("patch_size"), cfg.get("width"), cfg.get("layers")
    config = config_of(source)
    return vision_shape(config["vision_config"]) if config and "vision_config" in config else None


def check_text_encoder(pretrained: str, text_encoder: str | None) -> None:
    """Raise, saying what to pass, when a checkpoint needs a text tower and has none or one that does not fit it,
    or is given one although its family has none."""
    config = config_of(pretrained)
    family = FAMILIES.get((config or {}).get("model_type"))
    if family is not None and family.text_tower_kind is None:  # Qwen2.5-VL: the text score comes from its LLM
        if text_encoder is not None:
            raise ValueError(no_text_tower(family))
        return
    if text_encoder is None:
        if pretrained in MODELS:
            return
        known = "it is LLaVA-1.5, so " if is_llava15(config) else ""
        choices = LLAVA15_TEXT_TOWERS if is_llava15(config) else tuple(TEXT_TOWERS)
        raise ValueError(f"{pretrained!r} is not in rclib's registry ({', '.join(MODELS)}), so its CLIP text tower is "
                         f"unknown: {known}pass --model-args text_encoder={choices[0]} (or "
                         f"{', '.join(choices[1:])}, a CLIPModel hub id or folder, an open_clip folder)")
    tower = text_tower_shape(text_encoder)
    llava = vision_shape(config["vision_config"]) if config and "vision_config" in config else None
    if tower and llava and tower != llava:
        raise ValueError(f"text_encoder {text_encoder!r} is a CLIP of image size, patch, width, layers {tower}, but "
                         f"{pretrained!r} was built on one of {llava}: pass the CLIP whose vision tower the checkpoint "
                         "holds (for LLaVA-1.5: clip-vit-large-patch14-336)")
