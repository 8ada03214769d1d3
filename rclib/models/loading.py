"""Load a LLaVA checkpoint and its CLIP text tower by registry name, hub id or local folder.

Only safetensors weights are read and no remote code is ever run. A checkpoint is looked up in this
order: a local folder, the local Hugging Face cache, a download. Without network (or with
``HF_HUB_OFFLINE=1``) and without a local copy, loading fails at once with a message that names the
checkpoint and says how to get it.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from rclib.models.llava import CompressedLlava, check_input_format
from rclib.models.registry import MODELS, TEXT_TOWERS, ModelSpec, TextTowerSpec, resolve
from rclib.models.text import OpenClipTextTower, TextTower, TransformersTextTower

# What is fetched from the hub: configs, tokenizer files, safetensors weights; never pickled *.bin weights.
HUB_FILES = ["*.json", "*.jinja", "*.txt", "*.model", "*.safetensors"]
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"  # open_clip's safetensors weights in a hub repo or folder


class CheckpointNotFound(FileNotFoundError):
    """A checkpoint is neither a local folder, nor in the Hugging Face cache, nor downloadable now."""


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (HF_HUB_OFFLINE, read at call time)."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def not_found(source: str | Path, what: str, reason: str, how: str | None = None) -> CheckpointNotFound:
    """The error for a missing checkpoint; ``how`` to get it defaults to the hub's download command."""
    how = how or (f"On a machine with network run `hf download {source}` (huggingface_hub's CLI) to fill the "
                  "cache, or pass the path of a local folder holding the checkpoint.")
    return CheckpointNotFound(f"{what} {str(source)!r} is not available: {reason}. {how}")


def find_folder(source: str | Path, what: str, patterns: list[str]) -> Path:
    """A local folder holding ``source``: the folder itself, or a hub id's snapshot (cached or downloaded now).

    patterns: the files of a hub repo to fetch.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    if Path(source).is_dir():
        return Path(source)
    if isinstance(source, Path) or Path(source).is_absolute() or str(source).startswith("."):
        raise not_found(source, what, "no such folder", "Pass an existing folder (rclib's own shapes models are "
                        "made by `rclib train-shapes`), a registry name or a hub id.")
    try:
        return Path(snapshot_download(str(source), allow_patterns=patterns, local_files_only=True))
    except HFValidationError as error:
        raise not_found(source, what, f"neither a folder nor a valid hub id ({error})") from error
    except LocalEntryNotFoundError:
        pass
    if hub_offline():
        raise not_found(source, what, "no copy in the Hugging Face cache and the hub is offline (HF_HUB_OFFLINE)")
    try:
        return Path(snapshot_download(str(source), allow_patterns=patterns))
    except (LocalEntryNotFoundError, HfHubHTTPError) as error:
        raise not_found(source, what, f"no copy in the Hugging Face cache and the download failed ({error})") from error


def checkpoint_folder(source: str | Path, what: str, weights: str = "*.safetensors",
                      patterns: list[str] = HUB_FILES) -> Path:
    """The local folder of ``source`` (see :func:`find_folder`), checked to hold safetensors ``weights``.

    rclib never unpickles *.bin / *.pt weights.
    """
    folder = find_folder(source, what, patterns)
    if not any(folder.glob(weights)):
        raise not_found(source, what, f"no {weights} weights in {folder}", "rclib reads safetensors only: save a "
                        "safetensors copy once (from_pretrained + save_pretrained, on a machine you trust) and pass "
                        "its folder; for OpenAI's CLIP, text_encoder='open_clip-vit-large-patch14-336' has the same "
                        "weights as safetensors.")
    return folder


def complete_legacy_processor(processor, config) -> None:
    """Fill in what processors saved before transformers 4.47 lack to expand <image> into N tokens."""
    if processor.patch_size is None:
        processor.patch_size = config.vision_config.patch_size
        processor.vision_feature_select_strategy = config.vision_feature_select_strategy
        processor.num_additional_image_tokens = 1  # CLIP's [CLS]; "default" selection then drops it again


def torch_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """The requested dtype (a torch dtype or its name); by default float16 on GPU, float32 on CPU."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def text_tower_spec(text_encoder: str | Path) -> TextTowerSpec:
    """A registry key, an open_clip folder (has open_clip_config.json), or a CLIPModel hub id / folder."""
    if isinstance(text_encoder, str) and text_encoder in TEXT_TOWERS:
        return TEXT_TOWERS[text_encoder]
    is_open_clip = (Path(text_encoder) / "open_clip_config.json").is_file()
    return TextTowerSpec("open_clip" if is_open_clip else "transformers", text_encoder)


def load_text_tower(spec: TextTowerSpec, device: torch.device, dtype: torch.dtype) -> TextTower:
    """Load the text tower a spec names, on device. A missing checkpoint fails before the heavy imports."""
    source = resolve(spec.source)
    if spec.kind == "transformers":
        folder = checkpoint_folder(source, "CLIP text tower")
        from transformers import AutoTokenizer, CLIPModel

        clip = CLIPModel.from_pretrained(folder, dtype=dtype, use_safetensors=True)
        tower = TransformersTextTower(clip, AutoTokenizer.from_pretrained(folder))
        return tower.to(device).eval()

    import open_clip

    if spec.pretrained is None:  # a folder saved by open_clip (open_clip_config.json + safetensors weights)
        folder = checkpoint_folder(source, "open_clip text tower", weights=OPEN_CLIP_WEIGHTS)
        name = f"local-dir:{folder}"
        model = open_clip.create_model(name, device=device)
    else:  # a built-in model name and pretrained tag; the weights come from the tag's hub repo
        pretrained = open_clip.get_pretrained_cfg(str(source), spec.pretrained)
        repo = pretrained.get("hf_hub", "").strip("/")
        if not repo:
            raise ValueError(f"open_clip has no hub repo for {source} / {spec.pretrained}; pass a local folder")
        what = f"open_clip text tower ({source}, {spec.pretrained})"
        folder = checkpoint_folder(repo, what, weights=OPEN_CLIP_WEIGHTS, patterns=[OPEN_CLIP_WEIGHTS])
        name = str(source)
        model = open_clip.create_model(name, pretrained=str(folder / OPEN_CLIP_WEIGHTS), device=device)
    tower = OpenClipTextTower(model, open_clip.get_tokenizer(name))
    return tower.to(device=device, dtype=dtype).eval()


def load(name_or_path: str | Path = "shapes", text_encoder: str | Path | None = None,
         device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
         image_preprocess: str | None = None, prompt_format: str | None = None) -> CompressedLlava:
    """A LLaVA with its CLIP text tower, ready to answer.

    name_or_path: a name in ``rclib.models.registry.MODELS`` ("shapes", "llava-1.5-7b", ...), a hub id or
        a folder of a llava-hf format checkpoint.
    text_encoder: a name in ``TEXT_TOWERS``, a CLIPModel hub id or folder, or an open_clip folder;
        None takes the registry's pairing (required for checkpoints outside the registry).
    device: default cuda when available, else cpu. dtype: default float16 on GPU, float32 on CPU.
    image_preprocess: "pad" (to a square in the processor's mean colour, as LLaVA-1.5) or "crop" (the
        processor alone); prompt_format: "vicuna_v1" (LLaVA-1.5's evaluation prompt) or "chat_template".
        None takes the registry's (LLaVA-1.5: pad, vicuna_v1); a checkpoint outside it: crop, chat_template.
    """
    check_input_format(image_preprocess, prompt_format)
    registered = MODELS.get(name_or_path) if isinstance(name_or_path, str) else None
    text_encoder = text_encoder or (registered.text_tower if registered else None)
    if text_encoder is None:
        raise ValueError(f"{str(name_or_path)!r} is not in rclib's registry ({', '.join(MODELS)}), so its CLIP text "
                         f"tower is unknown: pass text_encoder= one of {', '.join(TEXT_TOWERS)}, a CLIPModel hub id "
                         "or folder, or an open_clip folder")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch_dtype(dtype, device)
    llava_folder = checkpoint_folder(resolve(registered.llava) if registered else name_or_path, "LLaVA checkpoint")
    text_tower = load_text_tower(text_tower_spec(text_encoder), device, dtype)
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(llava_folder, dtype=dtype, attn_implementation="sdpa",
                                                          use_safetensors=True)
    processor = AutoProcessor.from_pretrained(llava_folder)
    complete_legacy_processor(processor, model.config)
    defaults = registered or ModelSpec(name_or_path, str(text_encoder))  # unregistered: crop, chat_template
    return CompressedLlava(model.to(device), processor, text_tower, name=str(name_or_path),
                           text_encoder_name=str(text_encoder),
                           image_preprocess=image_preprocess or defaults.image_preprocess,
                           prompt_format=prompt_format or defaults.prompt_format)
