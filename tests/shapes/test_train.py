"""A quick training run writes loadable models in the real checkpoint formats (session-scoped: runs once)."""

import json

import pytest
import torch
from PIL import Image

from rclib.shapes.build import PROMPT_TEMPLATE, ShapesModelConfig, build_all
from rclib.shapes.world import IMAGE_SIZE, NUM_PATCHES, sample_vqa


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from rclib.shapes.train import train

    out = tmp_path_factory.mktemp("shapes-quick")
    metrics = train(out, quick=True)
    return out, metrics


def test_fresh_models_have_tied_vision_towers():
    clip, clip_tokenizer, llava, processor = build_all(ShapesModelConfig())
    clip_state, llava_state = clip.vision_model.state_dict(), llava.model.vision_tower.state_dict()
    assert clip_state.keys() == llava_state.keys()
    assert all(torch.equal(clip_state[k], llava_state[k]) for k in clip_state)


def test_quick_run_writes_safetensors_only(quick_run):
    out, metrics = quick_run
    for name in ("shapes-clip", "shapes-llava"):
        files = {p.name for p in (out / name).iterdir()}
        assert "model.safetensors" in files, f"{name} must be saved with save_pretrained (safetensors)"
        assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files), f"pickled weights in {name}"
    assert (out / "train-log.txt").read_text().count("llava step") >= 1
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) >= {"vqa_accuracy_generate", "pointing", "first_token_all_patches", "train_minutes"}


def test_saved_models_load_with_tied_towers_and_generate(quick_run):
    from transformers import AutoProcessor, AutoTokenizer, CLIPModel, LlavaForConditionalGeneration

    out, _ = quick_run
    clip = CLIPModel.from_pretrained(out / "shapes-clip")
    llava = LlavaForConditionalGeneration.from_pretrained(out / "shapes-llava")
    processor = AutoProcessor.from_pretrained(out / "shapes-llava")
    clip_tokenizer = AutoTokenizer.from_pretrained(out / "shapes-clip")

    clip_state, llava_state = clip.vision_model.state_dict(), llava.model.vision_tower.state_dict()
    assert all(torch.equal(clip_state[k], llava_state[k]) for k in clip_state), "vision towers must be identical"
    assert clip.config.text_config.eos_token_id == clip_tokenizer.eos_token_id
    assert llava.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")

    sample = sample_vqa(1, 1)[0]
    prompt = PROMPT_TEMPLATE.format(question=sample.question)
    inputs = processor(images=[Image.fromarray(sample.image)], text=[prompt], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert int((inputs["input_ids"] == llava.config.image_token_id).sum()) == NUM_PATCHES
    out_ids = llava.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out_ids.shape[1] > inputs["input_ids"].shape[1]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.question}]}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == prompt


def test_processor_matches_training_normalisation(quick_run):
    from transformers import AutoProcessor

    from rclib.shapes.data import pixel_values

    out, _ = quick_run
    processor = AutoProcessor.from_pretrained(out / "shapes-llava")
    image = sample_vqa(2, 1)[0].image
    expected = pixel_values(torch.from_numpy(image)[None])
    actual = processor.image_processor(images=[Image.fromarray(image)], return_tensors="pt")["pixel_values"]
    assert torch.allclose(actual, expected, atol=1e-5)


def test_quick_run_metrics_are_well_formed(quick_run):
    _, metrics = quick_run
    pruned = next(v for k, v in metrics.items() if k.startswith("first_token_visual_only_keep_"))
    for value in list(pruned.values()) + list(metrics["vqa_accuracy_generate"].values()):
        assert 0.0 <= value <= 1.0
    assert metrics["first_token_all_patches"]["evidence_recall_all"] == 1.0
    assert pruned["evidence_recall_all"] < 1.0, "keeping ~10% of the patches cannot keep every object"
    assert 0 < metrics["pointing"]["random_all"] < 0.2
