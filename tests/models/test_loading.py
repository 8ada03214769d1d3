"""Loading by registry name, hub id or folder; failing fast and clearly without a local copy."""
import time
from pathlib import Path

import pytest
import torch

from rclib.models import MODELS, TEXT_TOWERS, CheckpointNotFound, OpenClipTextTower, load
from rclib.models.registry import REPO_ROOT, resolve


@pytest.fixture
def offline_empty_cache(monkeypatch, tmp_path):
    """No network allowed and an empty Hugging Face cache, whatever the machine has."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.mark.parametrize("name, missing", [("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf"),
                                           ("rclib-test/no-such-llava", "rclib-test/no-such-llava")])
def test_missing_checkpoint_offline_fails_fast_with_how_to_get_it(offline_empty_cache, name, missing):
    start = time.perf_counter()
    with pytest.raises(CheckpointNotFound) as error:
        load(name, text_encoder="clip-vit-large-patch14-336", device="cpu")
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert missing in message and f"hf download {missing}" in message and "local folder" in message


def test_missing_text_tower_offline_names_it(offline_empty_cache, tiny_llava_dir):
    with pytest.raises(CheckpointNotFound, match="openai/clip-vit-large-patch14-336"):
        load(tiny_llava_dir, text_encoder="clip-vit-large-patch14-336", device="cpu")
    with pytest.raises(CheckpointNotFound, match="timm/vit_large_patch14_clip_336.openai"):
        load(tiny_llava_dir, text_encoder="open_clip-vit-large-patch14-336", device="cpu")


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(CheckpointNotFound, match="no such folder"):
        load(tmp_path / "nothing-here", text_encoder=tmp_path / "nor-here", device="cpu")


def test_unregistered_checkpoint_needs_a_text_encoder(tiny_llava_dir):
    with pytest.raises(ValueError, match="text_encoder="):
        load(tiny_llava_dir, device="cpu")


def test_registry_pairs_every_model_with_a_known_text_tower():
    assert {spec.text_tower for spec in MODELS.values()} - {None} <= set(TEXT_TOWERS)
    assert {name for name, spec in MODELS.items() if spec.text_tower is None} == {"qwen2.5-vl-3b", "qwen2.5-vl-7b"}
    assert resolve(MODELS["shapes"].llava) == REPO_ROOT / "data/models/shapes-llava"
    assert resolve(MODELS["llava-1.5-7b"].llava) == "llava-hf/llava-1.5-7b-hf"
    assert (REPO_ROOT / "rclib").is_dir()


def test_open_clip_text_encoder_from_its_folder(tiny_llava_dir, tiny_open_clip_dir, tiny_images):
    model = load(tiny_llava_dir, text_encoder=tiny_open_clip_dir, device="cpu", dtype="float32")
    assert isinstance(model.text_tower, OpenClipTextTower)
    assert (model.name, model.text_encoder_name) == (str(tiny_llava_dir), str(tiny_open_clip_dir))
    encoded = model.encode(tiny_images[:2], ["what colour ?", "how many ?"])
    assert encoded.text_sim.shape == (2, 64) and encoded.text_sim.dtype == torch.float32


def test_only_safetensors_weights_are_read(tiny_open_clip_dir, tmp_path):
    folder = tmp_path / "pickled-open-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text((Path(tiny_open_clip_dir) / "open_clip_config.json").read_text())
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"")
    from rclib.models.loading import load_text_tower, text_tower_spec

    with pytest.raises(CheckpointNotFound, match="safetensors only"):
        load_text_tower(text_tower_spec(folder), torch.device("cpu"), torch.float32)


def test_legacy_processor_is_completed_to_expand_the_image_token(tiny_model, tiny_images):
    from transformers import LlavaProcessor

    from rclib.models.loading import complete_legacy_processor

    current = tiny_model.processor
    legacy = LlavaProcessor(image_processor=current.image_processor, tokenizer=current.tokenizer)  # no patch_size
    complete_legacy_processor(legacy, tiny_model.model.config)
    ids = legacy(images=tiny_images[:1], text=["USER: <image>\nwhat ? ASSISTANT:"], return_tensors="pt")["input_ids"]
    assert int((ids == tiny_model.model.config.image_token_id).sum()) == 64


def test_a_llava15_outside_the_registry_gets_the_papers_input(tiny_llava_dir, tiny_clip_dir, monkeypatch):
    """A folder whose config is LLaVA-1.5's is run as the paper ran it (pad to square, vicuna_v1), wherever it lies;
    any other folder with its own processor and chat template; device_map places the layers (here all on the CPU)."""
    from rclib.models import registry

    plain = load(tiny_llava_dir, text_encoder=tiny_clip_dir, device="cpu", device_map="cpu")
    assert (plain.image_preprocess, plain.prompt_format) == ("crop", "chat_template")
    assert plain.model.device.type == "cpu"
    monkeypatch.setattr(registry, "is_llava15", lambda config: config.get("model_type") == "llava")
    recognised = load(tiny_llava_dir, text_encoder=tiny_clip_dir, device="cpu")
    assert (recognised.image_preprocess, recognised.prompt_format) == ("pad", "vicuna_v1")
