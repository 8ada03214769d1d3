"""A LLaVA-1.5 checkpoint is recognised from its config.json wherever it lies and gets LLaVA-1.5's input."""
from __future__ import annotations

import pytest

from rclib.eval.checkpoints import LLAVA15_INPUT, input_format, is_llava15


@pytest.fixture(scope="module")
def llava15_config_dir(tmp_path_factory):
    """config.json of LLaVA-1.5-7B (transformers' LlavaConfig defaults are that model's), no weights."""
    from transformers import LlavaConfig

    folder = tmp_path_factory.mktemp("llava-1.5-7b-hf")
    LlavaConfig().save_pretrained(folder)
    return folder


def test_llava15_folder_gets_pad_and_vicuna(llava15_config_dir):
    assert input_format(str(llava15_config_dir)) == LLAVA15_INPUT == {"image_preprocess": "pad",
                                                                       "prompt_format": "vicuna_v1"}


def test_legacy_llava_hf_config_without_default_keys_is_recognised():
    vision = {"model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336, "patch_size": 14,
              "num_hidden_layers": 24}
    assert is_llava15({"model_type": "llava", "vision_config": vision, "text_config": {"model_type": "llama"}})
    thirteen = {"model_type": "llama", "hidden_size": 5120, "num_hidden_layers": 40}
    assert is_llava15({"model_type": "llava", "vision_config": vision, "text_config": thirteen})
    tiny_llama = {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 22}  # TinyLLaVA: its own input
    assert not is_llava15({"model_type": "llava", "vision_config": vision, "text_config": tiny_llama})
    assert not is_llava15({"model_type": "llava", "vision_config": {"image_size": 336}, "text_config": {}})


def test_other_checkpoints_keep_their_defaults(tiny_llava_dir):
    assert input_format(str(tiny_llava_dir)) == {}
    assert input_format("llava-1.5-7b") == {}  # the registry sets it
    assert input_format("no/such-checkpoint") == {}


def test_eval_model_loads_a_recognised_folder_with_llava15_input(llava15_config_dir, monkeypatch):
    import rclib.eval.model as eval_model

    seen = {}

    def load(name_or_path, text_encoder=None, device=None, dtype=None, image_preprocess=None, prompt_format=None):
        seen.update(image_preprocess=image_preprocess, prompt_format=prompt_format)
        raise RuntimeError("stop after the load call")

    monkeypatch.setattr(eval_model, "load", load)
    with pytest.raises(RuntimeError, match="stop after"):
        eval_model.RclibModel(pretrained=str(llava15_config_dir), text_encoder="clip-vit-large-patch14-336")
    assert seen["image_preprocess"] == "pad" and seen["prompt_format"] == "vicuna_v1"
    with pytest.raises(RuntimeError, match="stop after"):
        eval_model.RclibModel(pretrained=str(llava15_config_dir), text_encoder="x", image_preprocess="crop")
    assert seen["image_preprocess"] == "crop"  # an explicit option wins
