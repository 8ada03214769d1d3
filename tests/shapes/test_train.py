"""A quick training run writes loadable models in the real checkpoint formats (module-scoped: runs once)."""

import json

import pytest
import torch

from rclib.shapes.build import ShapesModelConfig, build_all
from rclib.shapes.world import FAMILIES, IMAGE_SIZE, NUM_PATCHES, sample_vqa


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from rclib.shapes.train import train

    out = tmp_path_factory.mktemp("shapes-quick")
    metrics = train(out, quick=True)
    return out, metrics


def test_fresh_models_have_tied_vision_towers():
    clip, _, llava, _ = build_all(ShapesModelConfig())
    clip_state, llava_state = clip.vision_model.state_dict(), llava.model.vision_tower.state_dict()
    assert clip_state.keys() == llava_state.keys()
    assert all(torch.equal(clip_state[k], llava_state[k]) for k in clip_state)


def test_quick_run_writes_safetensors_log_and_metrics(quick_run):
    out, _ = quick_run
    for name in ("shapes-clip", "shapes-llava"):
        files = {p.name for p in (out / name).iterdir()}
        assert "model.safetensors" in files, f"{name} must be saved with save_pretrained (safetensors)"
        assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files), f"pickled weights in {name}"
    log = (out / "train-log.txt").read_text()
    assert all(stage in log for stage in ("clip step", "text step", "align:", "llava step", "metrics"))
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) >= {"all_tokens", "cls_concentration", "pointing", "rc_adaptive", "train_minutes", "config"}
    assert set(saved["all_tokens"]) >= {"accuracy", "existence_yes_ratio"} | {f"accuracy_{f}" for f in FAMILIES}
    assert set(saved["pointing"]) == {"post_layernorm", "no_post_layernorm", "chance"}
    assert 0 < saved["cls_concentration"]["top1"] < saved["cls_concentration"]["top10"] <= 1
    assert 1 <= saved["rc_adaptive"]["mean_tokens"] <= NUM_PATCHES


def test_saved_models_load_through_rclib_with_tied_towers(quick_run):
    from rclib.models import load

    out, _ = quick_run
    model = load(out / "shapes-llava", text_encoder=out / "shapes-clip", device="cpu")
    clip_state = model.text_tower.post_layernorm.state_dict()
    assert all(torch.equal(v, model.model.model.vision_tower.post_layernorm.state_dict()[k]) for k, v in clip_state.items())
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(out / "shapes-clip")
    llava_state = model.model.model.vision_tower.state_dict()
    assert all(torch.equal(v, llava_state[k]) for k, v in clip.vision_model.state_dict().items())
    sample = sample_vqa(1, 1)[0]
    encoded = model.encode(sample.image, sample.question)
    assert encoded.pixel_values.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert encoded.features.shape[1] == NUM_PATCHES and int((encoded.input_ids == model.model.config.image_token_id).sum()) == NUM_PATCHES
    assert len(model.generate(encoded, model.compress(encoded, "rc"), max_new_tokens=3)) == 1


def test_processor_matches_training_normalisation(quick_run):
    from PIL import Image
    from transformers import AutoProcessor

    from rclib.shapes.data import pixel_values

    out, _ = quick_run
    processor = AutoProcessor.from_pretrained(out / "shapes-llava")
    image = sample_vqa(2, 1)[0].image
    expected = pixel_values(torch.from_numpy(image)[None])
    actual = processor.image_processor(images=[Image.fromarray(image)], return_tensors="pt")["pixel_values"]
    assert torch.allclose(actual, expected, atol=1e-5)


def test_a_step_with_a_loss_or_gradient_that_is_not_finite_updates_nothing():
    from rclib.shapes.stage import Stage

    weight = torch.nn.Parameter(torch.ones(3))
    stage = Stage(torch.optim.AdamW([weight], lr=0.1), minutes=10, steps=100, warmup_share=0.0)
    stage.update((weight * float("nan")).sum(), [weight])  # loss NaN
    stage.update((weight - 1).abs().sqrt().sum(), [weight])  # loss 0, gradient NaN
    assert torch.equal(weight.detach(), torch.ones(3)) and stage.skipped == 2 and stage.step == 2
    stage.update(weight.sum(), [weight])
    assert (weight.detach() < 1).all() and stage.skipped == 2
