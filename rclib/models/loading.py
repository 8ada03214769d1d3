"""Load a LLaVA checkpoint and its CLIP text tower by registry name, hub id or local folder.

Only safetensors weights are read and no remote code is ever run. A checkpoint is looked up in this
order: a local folder, the local Hugging Face cache, a download. Without network (or with
``HF_HUB_OFFLINE=1``) and without a local copy, loading fails at once with a message that names the
checkpoint and says how to get it.

Before any weights are read, a checkpoint's kind is checked (config.json's ``model_type``: a LLaVA for
the model, a CLIP for the text tower) and its safetensors headers are opened; after loading, the
weights must cover the model exactly (no missing, unexpected or reshaped keys in transformers' loading
report; open_clip loads strictly), so a partial checkpoint never runs with random weights.
"""
from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import torch

from rclib.models.families import FAMILIES, Family, family_of
from rclib.models.compressed import CompressedModel, no_text_tower
from rclib.models.prompts import check_input_format
from rclib.models.manifest import check_pair
from rclib.models.registry import MODELS, TEXT_TOWERS, TextTowerSpec, input_defaults, resolve
from rclib.models.text import OpenClipTextTower, SiglipTextTower, TextTower, TransformersTextTower

# What is fetched from the hub: configs, tokenizer files, safetensors weights; never pickled *.bin weights.
HUB_FILES = ["*.json", "*.jinja", "*.txt", "*.model", "*.safetensors"]
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"  # open_clip's safetensors weights in a hub repo or folder
TRANSFORMERS_TEXT_TOWERS = {  # config.json's model_type -> (transformers class, rclib's text tower over it)
    "clip": ("CLIPModel", TransformersTextTower),
    "siglip": ("SiglipModel", SiglipTextTower),
}
FLOATS = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}  # safetensors dtypes of weights rclib runs
SHOWN_KEYS = 6  # weight names an error lists before "..."
DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,  # dtype= names, with the usual aliases
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
          "float64": torch.float64, "fp64": torch.float64, "double": torch.float64}
DEVICE_TYPES = ("cpu", "cuda", "mps")  # what device= may name (with an index: "cuda:1")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model")  # any one lets transformers build the tokenizer (with its config)
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")  # the image processor's settings
NETWORK_TIMEOUT = 10.0  # seconds to connect to the hub, and for each of its answers, before loading fails
KIND_HINTS = {  # (what was expected, what config.json says) -> what to do
    ("llava", "clip"): "a CLIP is the text tower: pass it as text_encoder= (--text-encoder) and a LLaVA as the model",
    ("clip", "llava"): "a LLaVA holds only CLIP's vision tower: pass the CLIP it was built on (for LLaVA-1.5: "
                       "clip-vit-large-patch14-336 or open_clip-vit-large-patch14-336)",
}


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


def looks_like_path(source: str | Path) -> bool:
    """True for what can only be meant as a local folder: a Path, an absolute, home- or dot-relative path, a bare
    name, more than one slash, or a first part that is an existing folder here (``data/x``). Hub ids are
    ``owner/name``."""
    text = str(source)
    return (isinstance(source, Path) or text.startswith((".", "~", "/")) or "\\" in text or text.count("/") != 1
            or Path(text).parent.is_dir())


def no_such_folder(source: str | Path, what: str) -> CheckpointNotFound:
    """The error for a folder or name that does not exist, with the closest registry names and sibling folders."""
    path = Path(source).expanduser()
    siblings = [str(path.parent / p.name) for p in path.parent.iterdir() if p.is_dir()] if path.parent.is_dir() else []
    close = difflib.get_close_matches(str(source), [*MODELS, *TEXT_TOWERS, *siblings], n=3, cutoff=0.6)
    hint = f"Did you mean {' or '.join(map(repr, close))}? " if close else ""
    return not_found(source, what, "no such folder, registry name or hub id (owner/name)",
                     f"{hint}Registry names: {', '.join(MODELS)} (models), {', '.join(TEXT_TOWERS)} (text towers); "
                     "rclib's own shapes models are made by `rclib train-shapes`.")


def check_exists_locally(name_or_path: str | Path) -> None:
    """Raise the not-found error for a name that can only be a local folder (see looks_like_path) and is none."""
    if looks_like_path(name_or_path) and not Path(name_or_path).is_dir():
        raise no_such_folder(name_or_path, "LLaVA checkpoint")


def use_network_timeout() -> None:
    """Give huggingface_hub's HTTP client NETWORK_TIMEOUT: its default waits forever on a server that accepts and
    never answers. A client factory the user set is left alone."""
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    def bound(request) -> None:  # huggingface_hub passes timeout=None per request: bound each one here
        timeouts = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {k: NETWORK_TIMEOUT if v is None else v for k, v in
                                         {"connect": None, "read": None, "write": None, "pool": None, **timeouts}.items()}

    def with_timeout():
        client = _http.default_client_factory()
        client.event_hooks["request"].append(bound)
        return client

    if _http._GLOBAL_CLIENT_FACTORY is _http.default_client_factory:
        set_client_factory(with_timeout)


def find_folder(source: str | Path, what: str, patterns: list[str]) -> Path:
    """A local folder holding ``source``: the folder itself, or a hub id's snapshot (cached or downloaded now).

    patterns: the files of a hub repo to fetch.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    if Path(source).is_dir():
        return Path(source)
    if looks_like_path(source):
        raise no_such_folder(source, what)
    try:
        return Path(snapshot_download(str(source), allow_patterns=patterns, local_files_only=True))
    except HFValidationError as error:
        raise not_found(source, what, f"neither a folder nor a valid hub id ({error})") from error
    except LocalEntryNotFoundError:
        pass
    if hub_offline():
        raise not_found(source, what, "no copy in the Hugging Face cache and the hub is offline (HF_HUB_OFFLINE)")
    use_network_timeout()
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


def read_json(path: Path) -> dict:
    """A checkpoint's JSON file; a ValueError names the file if it is not UTF-8 JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not valid JSON ({error}): the checkpoint is damaged; download or save it "
                         "again") from error


def check_kind(folder: Path, what: str, model_type: str) -> None:
    """Raise a ValueError unless ``folder``'s config.json says ``model_type`` (e.g. "llava", "clip")."""
    config = folder / "config.json"
    if not config.is_file():
        raise not_found(folder, what, "no config.json in it", "Pass a folder written by save_pretrained.")
    found = read_json(config).get("model_type")
    if found != model_type:
        hint = KIND_HINTS.get((model_type, found), f"pass a {model_type!r} checkpoint in transformers' format")
        raise ValueError(f"{str(folder)!r} holds a {found!r} checkpoint (config.json's model_type), not a {what} "
                         f"({model_type!r}): {hint}")


def read_json_if_any(path: Path) -> dict:
    """A checkpoint's JSON file, or {} when there is none."""
    return read_json(path) if path.is_file() else {}


def check_weight_files(folder: Path, pattern: str = "*.safetensors") -> None:
    """Open the header of every safetensors file in ``folder``; a ValueError names a damaged or truncated one."""
    from safetensors import safe_open

    for path in sorted(folder.glob(pattern)):
        try:
            with safe_open(path, framework="pt") as weights:
                kinds = {key: weights.get_slice(key).get_dtype() for key in weights.keys()}
        except Exception as error:  # safetensors' own SafetensorError, neither an OSError nor a ValueError
            raise ValueError(f"{str(path)!r} is not a readable safetensors file ({error}): it is damaged or "
                             "truncated; download or save it again") from error
        whole = sorted(key for key, kind in kinds.items() if key.endswith(("weight", "bias")) and kind not in FLOATS)
        if whole:
            raise ValueError(f"{str(path)!r} holds weights that are not floating point ({listed(whole)}: "
                             f"{kinds[whole[0]]}): a quantised or damaged checkpoint; pass one saved in float16, "
                             "bfloat16 or float32")


def listed(keys) -> str:
    keys = sorted(map(str, keys))
    return ", ".join(keys[:SHOWN_KEYS]) + (f", ... ({len(keys)} in all)" if len(keys) > SHOWN_KEYS else "")


def check_coverage(info: dict, folder: Path, what: str) -> None:
    """Raise a ValueError naming the weight files and keys unless transformers' loading report ``info``
    (``output_loading_info=True``) is clean. Tied weights (lm_head = embeddings) are not reported missing."""
    problems = [f"missing {listed(info['missing_keys'])}" if info["missing_keys"] else "",
                f"unexpected {listed(info['unexpected_keys'])}" if info["unexpected_keys"] else "",
                "other shapes " + listed(f"{key} {tuple(saved)} vs {tuple(wanted)}"
                                         for key, saved, wanted in info["mismatched_keys"])
                if info["mismatched_keys"] else ""]
    problems = [p for p in problems if p]
    if problems:
        files = ", ".join(p.name for p in sorted(folder.glob("*.safetensors")))
        raise ValueError(f"the weights in {str(folder)!r} ({files}) do not fit the {what}: {'; '.join(problems)}. "
                         "These parts would run with random weights: pass a complete checkpoint of this model")


def from_pretrained_checked(cls, folder: Path, what: str, **options):
    """``cls.from_pretrained(folder)`` from safetensors, refused unless the weights cover the model exactly.
    transformers' own loading report is silenced (the refusal names the same keys), and so is its "Loading
    weights" bar (the folder is local: nothing to wait for)."""
    from transformers.utils import logging as transformers_logging

    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        model, info = cls.from_pretrained(folder, output_loading_info=True, ignore_mismatched_sizes=True,
                                          use_safetensors=True, **options)
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
    check_coverage(info, folder, what)
    check_finite_weights(model, folder, what)
    return model


def check_finite_weights(model, folder: Path, what: str) -> None:
    """Raise a ValueError naming the parameters of ``model`` that hold NaN or inf (a damaged checkpoint answers
    nothing, silently, with them)."""
    bad = [name for name, value in model.named_parameters() if not bool(torch.isfinite(value).all())]
    if bad:
        raise ValueError(f"the weights in {str(folder)!r} hold NaN or inf in {listed(bad)}: the {what} is damaged; "
                         "download or save it again")


def check_llava_folder(folder: Path) -> Family:
    """Before loading: ``folder`` holds a checkpoint of a family rclib runs (config.json's model_type) with
    readable safetensors headers. Returns its family."""
    config = folder / "config.json"
    if not config.is_file():
        raise not_found(folder, "LLaVA checkpoint", "no config.json in it", "Pass a folder written by save_pretrained.")
    found = read_json(config).get("model_type")
    if found not in FAMILIES:
        check_kind(folder, "LLaVA checkpoint", "llava")  # a CLIP passed as the model: say what to do with it
        family_of(found)
    check_weight_files(folder)
    return FAMILIES[found]


def load_llava(folder: Path, dtype: torch.dtype, family: Family, device_map: str | dict | None = None):
    """The checkpoint of ``folder`` as its family's transformers class (SDPA attention), its weights checked to
    cover it; device_map: transformers' placement of its layers (None: leave it to the caller)."""
    import transformers

    placement = {} if device_map is None else {"device_map": device_map}
    return from_pretrained_checked(getattr(transformers, family.model_class), folder, f"{family.title} checkpoint",
                                   dtype=dtype, attn_implementation="sdpa", **placement)


def create_open_clip(name: str, weights: Path, device: torch.device, **options):
    """``open_clip.create_model`` (strict loading), its errors as ValueErrors that name the weights file."""
    import open_clip

    check_weight_files(weights.parent, weights.name)
    try:
        return open_clip.create_model(name, device=device, **options)
    except RuntimeError as error:  # load_state_dict(strict=True): missing, unexpected or reshaped keys
        first = " ".join(str(error).split())[:400].rstrip(".")
        raise ValueError(f"the weights in {str(weights)!r} do not fit open_clip model {name!r}: {first}. Pass a "
                         "complete checkpoint of this model") from error


def complete_legacy_processor(processor, config) -> None:
    """Fill in what processors saved before transformers 4.47 lack to expand <image> into N tokens (LLaVA-1.5 and
    LLaVA-NeXT processors, which count the image's tokens from the patch size)."""
    if getattr(processor, "patch_size", "") is None:
        processor.patch_size = config.vision_config.patch_size
        processor.vision_feature_select_strategy = config.vision_feature_select_strategy
        processor.num_additional_image_tokens = 1  # CLIP's [CLS]; "default" selection then drops it again


def torch_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """The requested dtype: a floating-point torch dtype or its name ("float16", "bfloat16", "float32", "float64",
    or "fp16", "half", "bf16", "fp32", "float", "fp64", "double"); by default float16 on GPU, float32 on CPU."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    names = ", ".join(map(repr, DTYPES))
    if isinstance(dtype, str):
        name = dtype.strip().lower().removeprefix("torch.")
        if name not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not a floating-point type rclib loads: pass one of {names}")
        return DTYPES[name]
    if not isinstance(dtype, torch.dtype) or dtype not in DTYPES.values():
        raise ValueError(f"dtype must be a floating-point torch dtype or its name, got {dtype!r}: pass one of {names}")
    return dtype


def torch_device(device: torch.device | str | None) -> torch.device:
    """The requested device (a torch.device or its name, "cpu", "cuda", "cuda:1", "mps"), checked to exist here;
    by default cuda when available, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hint = "pass 'cpu', 'cuda' (or 'cuda:N'), 'mps' or a torch.device"
    if isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"  # torch's convention: an index is a GPU
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be a device name or a torch.device, got {type(device).__name__}: {hint}")
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        gpu = " (a GPU is 'cuda')" if str(device).strip().lower().startswith("gpu") else ""
        raise ValueError(f"unknown device {device!r}{gpu}: {hint}") from None
    if device.type not in DEVICE_TYPES:
        raise ValueError(f"rclib does not run on device type {device.type!r}: {hint}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine (no GPU, or torch built "
                             "without CUDA): pass device='cpu'")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps': Apple's Metal backend is not available here: pass device='cpu'")
    return device


def check_processor_files(folder: Path, what: str = "LLaVA checkpoint") -> None:
    """Before loading: ``folder`` holds the files transformers builds the tokenizer (and, for a model, the image
    processor) from; without them it would fail later with advice to install sentencepiece or tiktoken."""
    def how(part: str) -> str:
        return (f"save them next to the weights: load the {part} of the checkpoint the weights came from and call "
                f"its save_pretrained({str(folder)!r}) (processor.save_pretrained for a model)")

    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"{what} folder {str(folder)!r} lacks its tokenizer files (one of "
                         f"{', '.join(TOKENIZER_FILES)}): {how('processor' if what.startswith('LLaVA') else 'tokenizer')}")
    if what.startswith("LLaVA") and not any((folder / name).is_file() for name in PROCESSOR_FILES):
        raise ValueError(f"{what} folder {str(folder)!r} lacks its image processor's settings (preprocessor_config.json"
                         f" or processor_config.json): {how('processor')}")


def text_tower_spec(text_encoder: str | Path) -> TextTowerSpec:
    """A registry key, an open_clip folder (has open_clip_config.json), or a CLIPModel hub id / folder."""
    if isinstance(text_encoder, str) and text_encoder in TEXT_TOWERS:
        return TEXT_TOWERS[text_encoder]
    is_open_clip = (Path(text_encoder) / "open_clip_config.json").is_file()
    return TextTowerSpec("open_clip" if is_open_clip else "transformers", text_encoder)


def load_text_tower(spec: TextTowerSpec, device: torch.device, dtype: torch.dtype,
                    paired_with: Path | None = None) -> TextTower:
    """Load the text tower a spec names, on device. A missing checkpoint fails before the heavy imports.
    paired_with: the LLaVA folder it is loaded for; their manifests must agree (:mod:`rclib.models.manifest`)."""
    source = resolve(spec.source)
    if spec.kind == "transformers":
        folder = checkpoint_folder(source, "CLIP text tower")
        if paired_with is not None:
            check_pair(paired_with, folder)
        if read_json_if_any(folder / "config.json").get("model_type") != "siglip":
            check_kind(folder, "CLIP text tower", "clip")
        check_weight_files(folder)
        check_processor_files(folder, "CLIP text tower")
        import transformers

        model_type = read_json(folder / "config.json")["model_type"]
        model_class, tower_class = TRANSFORMERS_TEXT_TOWERS[model_type]
        what = f"{model_type.upper() if model_type == 'clip' else 'SigLIP'} text tower"
        contrastive = from_pretrained_checked(getattr(transformers, model_class), folder, what, dtype=dtype)
        tower = tower_class(contrastive, transformers.AutoTokenizer.from_pretrained(folder))
        return tower.to(device).eval()

    if paired_with is not None:
        check_pair(paired_with, None)
    import open_clip

    if spec.pretrained is None:  # a folder saved by open_clip (open_clip_config.json + safetensors weights)
        folder = checkpoint_folder(source, "open_clip text tower", weights=OPEN_CLIP_WEIGHTS)
        read_json(folder / "open_clip_config.json")
        name = f"local-dir:{folder}"
        model = create_open_clip(name, folder / OPEN_CLIP_WEIGHTS, device)
    else:  # a built-in model name and pretrained tag; the weights come from the tag's hub repo
        pretrained = open_clip.get_pretrained_cfg(str(source), spec.pretrained)
        repo = pretrained.get("hf_hub", "").strip("/")
        if not repo:
            raise ValueError(f"open_clip has no hub repo for {source} / {spec.pretrained}; pass a local folder")
        what = f"open_clip text tower ({source}, {spec.pretrained})"
        folder = checkpoint_folder(repo, what, weights=OPEN_CLIP_WEIGHTS, patterns=[OPEN_CLIP_WEIGHTS])
        name = str(source)
        model = create_open_clip(name, folder / OPEN_CLIP_WEIGHTS, device, pretrained=str(folder / OPEN_CLIP_WEIGHTS))
    tower = OpenClipTextTower(model, open_clip.get_tokenizer(name))
    return tower.to(device=device, dtype=dtype).eval()


def load(name_or_path: str | Path = "shapes", text_encoder: str | Path | None = None,
         device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
         image_preprocess: str | None = None, prompt_format: str | None = None, newlines: str = "rows",
         text_score: str = "attention", budget_scope: str = "image", device_map: str | dict | None = None
         ) -> CompressedModel:
    """A model of any family rclib runs with its text tower (where it has one), ready to answer.

    name_or_path: a name in ``rclib.models.registry.MODELS`` ("shapes", "llava-1.5-7b", ...), a hub id or
        a folder of a llava-hf format checkpoint.
    text_encoder: a name in ``TEXT_TOWERS``, a CLIPModel hub id or folder, or an open_clip folder;
        None takes the registry's pairing (required for checkpoints outside the registry).
    device: default cuda when available, else cpu. dtype: default float16 on GPU, float32 on CPU.
    image_preprocess: "pad" (to a square in the processor's mean colour, as LLaVA-1.5) or "crop" (the
        processor alone); prompt_format: "vicuna_v1" (LLaVA-1.5's evaluation prompt) or "chat_template".
        None takes the registry's (LLaVA-1.5: pad, vicuna_v1); a checkpoint outside it: crop, chat_template.
    newlines: for families whose LLM reads a row-end token after each row of tiles (LLaVA-NeXT): "rows" keeps
        one after each row that still holds a token after compression, "none" drops them (the peers' way).
    text_score: for families without a text tower (Qwen2.5-VL), the LLM-side text score (rclib.models.text_free).
    device_map: transformers' placement of the checkpoint's layers ("auto": over every GPU, then CPU, for a model
        larger than one GPU); None puts the whole model on ``device``.
    budget_scope: "image" spends a budget over all of an image's tokens; "crop" gives each crop of a tiled image
        (LLaVA-NeXT's base view and tiles) an equal share, as the peers' released LLaVA-NeXT code does.
    """
    check_input_format(image_preprocess, prompt_format)
    for name, value in (("name_or_path", name_or_path), ("text_encoder", text_encoder)):
        if not (isinstance(value, (str, os.PathLike)) or value is None and name == "text_encoder"):
            raise ValueError(f"{name} must be a registry name ({', '.join(MODELS if name == 'name_or_path' else TEXT_TOWERS)}"
                             f"), a hub id (owner/name) or a folder path, got {type(value).__name__} {value!r}")
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"{name} is empty: pass a registry name, a hub id (owner/name) or a folder path")
    device = torch_device(device)
    dtype = torch_dtype(dtype, device)
    registered = MODELS.get(name_or_path) if isinstance(name_or_path, str) else None
    text_encoder = text_encoder or (registered.text_tower if registered else None)
    if text_encoder is None and not registered:
        check_exists_locally(name_or_path)  # a mistyped name or folder: say that, not that the text tower is unknown
    llava_folder = checkpoint_folder(resolve(registered.llava) if registered else name_or_path, "LLaVA checkpoint")
    family = check_llava_folder(llava_folder)
    check_processor_files(llava_folder)
    if family.text_tower_kind is None and text_encoder is not None:
        raise ValueError(no_text_tower(family))
    if family.text_tower_kind is not None and text_encoder is None:
        raise ValueError(f"{str(name_or_path)!r} is not in rclib's registry ({', '.join(MODELS)}), so its "
                         f"{family.text_tower_kind} text tower is unknown: pass text_encoder= one of "
                         f"{', '.join(TEXT_TOWERS)}, a CLIPModel or SiglipModel hub id or folder, or an open_clip folder")
    text_tower = (load_text_tower(text_tower_spec(text_encoder), device, dtype, paired_with=llava_folder)
                  if text_encoder is not None else None)
    from transformers import AutoProcessor

    model = load_llava(llava_folder, dtype, family, device_map)
    processor = AutoProcessor.from_pretrained(llava_folder)
    complete_legacy_processor(processor, model.config)
    defaults = input_defaults(name_or_path, read_json(llava_folder / "config.json"))
    return CompressedModel(model if device_map is not None else model.to(device), processor, text_tower,
                           name=str(name_or_path),
                           text_encoder_name=str(text_encoder or ""),
                           image_preprocess=image_preprocess or defaults.image_preprocess,
                           prompt_format=prompt_format or defaults.prompt_format, newlines=newlines,
                           text_score=text_score, budget_scope=budget_scope)
