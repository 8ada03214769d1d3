"""Which checkpoints rclib knows by name, and which text tower goes with each.

A LLaVA checkpoint carries only its contrastive model's vision tower (CLIP, SigLIP); the text score needs the
text tower (and the visual head) of the SAME model. The pairing is data, kept here and nowhere else.

A ``str`` source is a Hugging Face hub id; a :class:`~pathlib.Path` source is a local folder, relative
paths resolving against the repository root (where ``data/models/`` lives).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # rclib/models/registry.py -> repository root


@dataclass(frozen=True)
class TextTowerSpec:
    """A CLIP text tower with its joint-space projections."""

    kind: str  # "transformers": a CLIPModel checkpoint; "open_clip": an open_clip model
    source: str | Path  # hub id or folder; for open_clip with `pretrained`, a built-in model name
    pretrained: str | None = None  # open_clip only: the pretrained tag of the built-in model (e.g. "openai")

    def __post_init__(self):
        if self.kind not in ("transformers", "open_clip"):
            raise ValueError(f"kind must be 'transformers' or 'open_clip', got {self.kind!r}")
        if self.pretrained is not None and self.kind != "open_clip":
            raise ValueError("pretrained tags exist for open_clip models only; leave pretrained=None")


@dataclass(frozen=True)
class ModelSpec:
    """A checkpoint of a family rclib runs (rclib.models.families) in llava-hf format and the CLIP it was built on."""

    llava: str | Path  # hub id or folder of the checkpoint + processor (LlavaForConditionalGeneration, LlavaNext...)
    text_tower: str | None  # key of TEXT_TOWERS: the CLIP / SigLIP whose vision tower it uses; None: it has none
    image_preprocess: str = "crop"  # "crop": the processor alone; "pad": to a square in the mean colour first
    prompt_format: str = "chat_template"  # "chat_template": the checkpoint's; "vicuna_v1": LLaVA-1.5's evaluation


def resolve(source: str | Path) -> str | Path:
    """A registry source as the loader takes it: relative folders become absolute under the repo root."""
    return REPO_ROOT / source if isinstance(source, Path) and not source.is_absolute() else source


TEXT_TOWERS: dict[str, TextTowerSpec] = {
    # the project's own small CLIP, trained with the shapes world (rclib.shapes)
    "shapes-clip": TextTowerSpec("transformers", Path("data/models/shapes-clip")),
    # the CLIP of LLaVA-1.5 (ViT-L/14, 336 px), through transformers
    "clip-vit-large-patch14-336": TextTowerSpec("transformers", "openai/clip-vit-large-patch14-336"),
    # the same OpenAI weights through open_clip (QuickGELU, as OpenAI trained it)
    "open_clip-vit-large-patch14-336": TextTowerSpec("open_clip", "ViT-L-14-336-quickgelu", pretrained="openai"),
    # the SigLIP of LLaVA-OneVision (so400m/14, 384 px), with its text tower and vision pooling head
    "siglip-so400m-patch14-384": TextTowerSpec("transformers", "google/siglip-so400m-patch14-384"),
}

MODELS: dict[str, ModelSpec] = {
    # the project default: a small LLaVA trained on the shapes world, runs on a laptop CPU
    "shapes": ModelSpec(Path("data/models/shapes-llava"), "shapes-clip"),
    # the shapes model was trained on square scenes with its chat template (USER: <image>\n...), no system prompt
    # LLaVA-1.5 as it was trained and evaluated (liuhaotian/LLaVA): image_aspect_ratio="pad", conv_mode vicuna_v1
    "llava-1.5-7b": ModelSpec("llava-hf/llava-1.5-7b-hf", "clip-vit-large-patch14-336", "pad", "vicuna_v1"),
    "llava-1.5-13b": ModelSpec("llava-hf/llava-1.5-13b-hf", "clip-vit-large-patch14-336", "pad", "vicuna_v1"),
    # TinyLLaVA v1 (TinyLlama-1.1B + LLaVA-1.5 recipe), CPU-sized; its config.json has a CLIP ViT-L/14-336
    # vision tower (clip_vision_model, 24 layers, width 1024, patch 14, 336 px) used at layer -2; its card prompts
    # "USER: <image>\n... ASSISTANT:" and its evaluation settings are not published with it: its own processor
    "tiny-llava-v1": ModelSpec("bczhou/tiny-llava-v1-hf", "clip-vit-large-patch14-336"),
    # LLaVA-NeXT (LLaVA-1.6): LLaVA-1.5's CLIP ViT-L/14-336 on a base view + up to 4 anyres tiles (2,880 patch
    # tokens and a newline per tile row); the processor does the tiling ("crop" adds nothing before it) and each
    # checkpoint's chat template is its own prompt format (Vicuna's USER/ASSISTANT, Mistral's [INST])
    "llava-v1.6-vicuna-7b": ModelSpec("llava-hf/llava-v1.6-vicuna-7b-hf", "clip-vit-large-patch14-336"),
    "llava-v1.6-mistral-7b": ModelSpec("llava-hf/llava-v1.6-mistral-7b-hf", "clip-vit-large-patch14-336"),
    "llava-v1.6-vicuna-13b": ModelSpec("llava-hf/llava-v1.6-vicuna-13b-hf", "clip-vit-large-patch14-336"),
    # LLaVA-OneVision: SigLIP so400m/14-384 (no [CLS]) on a base view + anyres_max_9 tiles, a Qwen2 LLM; its text
    # score reads SigLIP's own text tower
    "llava-onevision-qwen2-0.5b-ov": ModelSpec("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "siglip-so400m-patch14-384"),
    "llava-onevision-qwen2-7b-ov": ModelSpec("llava-hf/llava-onevision-qwen2-7b-ov-hf", "siglip-so400m-patch14-384"),
    # Qwen2.5-VL: dynamic resolution, a ViT trained without a text tower (its text score comes from its LLM), M-RoPE
    "qwen2.5-vl-3b": ModelSpec("Qwen/Qwen2.5-VL-3B-Instruct", None),
    "qwen2.5-vl-7b": ModelSpec("Qwen/Qwen2.5-VL-7B-Instruct", None),
}


LLAVA15_INPUT = {"image_preprocess": "pad", "prompt_format": "vicuna_v1"}  # as LLaVA-1.5 was evaluated
LLAVA15_LLMS = {(4096, 32), (5120, 40)}  # Vicuna-7B, Vicuna-13B: (width, layers)
CLIP_L14_336 = (336, 14, 1024, 24)  # image size, patch, width, layers of LLaVA-1.5's CLIP
CLIP_VISION_DEFAULTS = {"image_size": 224, "patch_size": 32, "hidden_size": 768, "num_hidden_layers": 12}  # a
# config.json leaves out what equals transformers' CLIPVisionConfig defaults (LlamaConfig's: width 4096, 32 layers)


def vision_shape(vision: dict) -> tuple:
    """(image size, patch, width, layers) of a transformers CLIP vision config."""
    vision = {**CLIP_VISION_DEFAULTS, **vision}
    return vision["image_size"], vision["patch_size"], vision["hidden_size"], vision["num_hidden_layers"]


def is_llava15(config: dict | None) -> bool:
    """LLaVA-1.5-7B or -13B: CLIP ViT-L/14-336 read at its second-to-last layer, a GELU MLP projector, Vicuna."""
    if not config or config.get("model_type") != "llava":
        return False
    vision, text = config.get("vision_config") or {}, config.get("text_config") or {}
    return (vision_shape(vision) == CLIP_L14_336 and config.get("vision_feature_layer", -2) == -2
            and config.get("projector_hidden_act", "gelu") == "gelu" and text.get("model_type", "llama") == "llama"
            and (text.get("hidden_size", 4096), text.get("num_hidden_layers", 32)) in LLAVA15_LLMS)


def recognised_input(config: dict | None) -> dict:
    """LLaVA-1.5's image preprocessing and prompt for a checkpoint whose config is LLaVA-1.5's, else {}: a LLaVA-1.5
    outside the registry (a folder, a hub id) is run as the paper ran it."""
    return dict(LLAVA15_INPUT) if is_llava15(config) else {}


def input_defaults(name_or_path: str | Path, config: dict | None) -> ModelSpec:
    """The spec whose image_preprocess and prompt_format a model gets unless told otherwise: the registry's for a
    registered name, LLaVA-1.5's for a LLaVA-1.5 checkpoint outside it (:func:`recognised_input`), else the
    checkpoint's own (crop, chat_template). config: the checkpoint's config.json."""
    registered = MODELS.get(name_or_path) if isinstance(name_or_path, str) else None
    return registered or ModelSpec(name_or_path, None, **recognised_input(config))
