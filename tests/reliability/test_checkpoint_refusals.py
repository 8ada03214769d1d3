"""Loading refuses what would run wrongly: partial weights, the wrong kind of checkpoint,
damaged files, mistyped names; all before the model loads where the files tell."""
import shutil
import time

import pytest
import safetensors.torch
import torch

from rclib.models import CheckpointNotFound, load


def copy(folder, tmp_path, name="copy"):
    return shutil.copytree(folder, tmp_path / name)


def drop_weights(folder, prefixes):
    path = folder / "model.safetensors"
    weights = safetensors.torch.load_file(path)
    safetensors.torch.save_file({k: v for k, v in weights.items() if not k.startswith(prefixes)}, path,
                                metadata={"format": "pt"})


# A LLaVA folder without its projector and lm_head would run on random ones and answer nonsense with exit 0.
def test_a_llava_without_projector_and_lm_head_is_refused_naming_the_keys(tiny_llava_dir, tiny_clip_dir, tmp_path):
    broken = copy(tiny_llava_dir, tmp_path)
    drop_weights(broken, ("multi_modal_projector", "language_model.lm_head"))
    with pytest.raises(ValueError, match=r"the weights in '.*copy' \(model.safetensors\) do not fit the LLaVA "
                                         r"checkpoint: missing lm_head.weight, model.multi_modal_projector.linear_1"):
        load(broken, text_encoder=tiny_clip_dir, device="cpu")


def test_unexpected_and_reshaped_weights_are_refused(tiny_llava_dir, tiny_clip_dir, tmp_path):
    broken = copy(tiny_llava_dir, tmp_path)
    weights = safetensors.torch.load_file(broken / "model.safetensors")
    weights["stray.weight"] = torch.zeros(2)
    weights["language_model.model.norm.weight"] = torch.zeros(7)
    safetensors.torch.save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"unexpected stray.weight; other shapes "
                                         r"model.language_model.norm.weight \(7,\) vs \(32,\)"):
        load(broken, text_encoder=tiny_clip_dir, device="cpu")


def test_a_tied_checkpoint_is_not_refused(tiny_llava_dir, tiny_clip_dir, tmp_path):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    tied = copy(tiny_llava_dir, tmp_path)
    config = LlavaConfig.from_pretrained(tied)
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = True
    LlavaForConditionalGeneration(config).save_pretrained(tied)  # lm_head is not saved: it is the embeddings
    assert not any("lm_head" in key for key in safetensors.torch.load_file(tied / "model.safetensors"))
    model = load(tied, text_encoder=tiny_clip_dir, device="cpu")
    assert model.model.lm_head.weight.data_ptr() == model.model.get_input_embeddings().weight.data_ptr()


# A LLaVA folder passed as the text encoder would give a randomly initialised text tower.
def test_a_llava_as_text_tower_is_refused_by_name(tiny_llava_dir):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"holds a 'llava' checkpoint \(config.json's model_type\), not a CLIP text "
                                         r"tower \('clip'\): a LLaVA holds only CLIP's vision tower"):
        load(tiny_llava_dir, text_encoder=tiny_llava_dir, device="cpu")
    assert time.perf_counter() - start < 2, "refused from config.json, before any weights load"


def test_a_partial_open_clip_text_tower_is_refused(tiny_llava_dir, tiny_open_clip_dir, tmp_path):
    broken = copy(tiny_open_clip_dir, tmp_path)
    path = broken / "open_clip_model.safetensors"
    weights = safetensors.torch.load_file(path)
    safetensors.torch.save_file({k: v for k, v in weights.items() if k != "text_projection"}, path)
    with pytest.raises(ValueError, match=r"open_clip_model.safetensors' do not fit open_clip model .*"
                                         r"Missing key\(s\) in state_dict: \"text_projection\""):
        load(tiny_llava_dir, text_encoder=broken, device="cpu")


# A CLIP folder given as --model is told apart from its config, before the full model load.
def test_a_clip_as_model_is_refused_before_loading(tiny_clip_dir):
    with pytest.raises(ValueError, match=r"holds a 'clip' checkpoint .* not a LLaVA checkpoint \('llava'\): a CLIP is "
                                         r"the text tower: pass it as text_encoder= \(--text-encoder\)"):
        load(tiny_clip_dir, text_encoder=tiny_clip_dir, device="cpu")


# A corrupt safetensors file and a config.json that is not JSON give a message naming the file, not a traceback.
@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:5000]),
     r"model.safetensors' is not a readable safetensors file \(.*\): it is damaged or truncated"),
    (lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 64),
     r"model.safetensors' is not a readable safetensors file"),
    (lambda f: (f / "config.json").write_text("{not json"), r"config.json' is not valid JSON \(.*\): the checkpoint "
                                                            r"is damaged"),
    (lambda f: (f / "config.json").write_bytes(b'{"model_type": "\xff"}'), r"config.json' is not valid JSON"),
])
def test_damaged_files_are_named(tiny_llava_dir, tiny_clip_dir, tmp_path, damage, message):
    broken = copy(tiny_llava_dir, tmp_path)
    damage(broken)
    with pytest.raises(ValueError, match=message):
        load(broken, text_encoder=tiny_clip_dir, device="cpu")


# An unknown name is reported with the closest registry names; a mistyped path is never looked up on the hub.
@pytest.fixture
def no_network(monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"the hub was asked for {args}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


def test_an_unknown_name_is_named_with_the_closest_registry_names(no_network):
    with pytest.raises(CheckpointNotFound, match=r"'no-such-name' is not available: no such folder, registry name or "
                                                 r"hub id \(owner/name\)\. Registry names: shapes"):
        load("no-such-name", device="cpu")
    with pytest.raises(CheckpointNotFound, match="Did you mean 'shapes'"):
        load("shape", device="cpu")


def test_a_mistyped_relative_path_is_not_looked_up_on_the_network(no_network, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "models" / "shapes-llava").mkdir(parents=True)
    with pytest.raises(CheckpointNotFound, match=r"'data/models/shape-llava' is not available: no such folder.* Did "
                                                 r"you mean 'data/models/shapes-llava'"):
        load("data/models/shape-llava", text_encoder="shapes-clip", device="cpu")
    with pytest.raises(CheckpointNotFound, match="'data/llava' is not available: no such folder"):
        load("data/llava", text_encoder="shapes-clip", device="cpu")  # like owner/name, but data/ is a folder here
    with pytest.raises(CheckpointNotFound, match="'./llava' is not available: no such folder"):
        load("./llava", text_encoder="shapes-clip", device="cpu")


def test_nan_or_integer_weights_are_refused_naming_them(tiny_llava_dir, tiny_clip_dir, tmp_path):
    """A weight with NaN would make the model answer nothing, and integer weights garbage: both are refused with the
    parameter and the file named."""
    for damage, message in ((lambda t: t.fill_(float("nan")), "hold NaN or inf in .*lm_head.weight"),
                            (lambda t: t.to(torch.int32), "not floating point .*lm_head.weight.*I32")):
        folder = copy(tiny_llava_dir, tmp_path, message[:4])
        path = folder / "model.safetensors"
        weights = safetensors.torch.load_file(path)
        key = next(k for k in weights if k.endswith("lm_head.weight"))
        weights[key] = damage(weights[key].clone())
        safetensors.torch.save_file(weights, path, metadata={"format": "pt"})
        with pytest.raises(ValueError, match=message):
            load(folder, text_encoder=tiny_clip_dir, device="cpu", dtype=torch.float32)
