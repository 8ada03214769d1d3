"""LLaVA-1.5 as it was evaluated: images padded to a square, vicuna_v1 prompts; the released text score."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rclib import compress
from rclib.models import MODELS, SYSTEM_PROMPT, TEXT_TOWERS, ModelSpec, TextTowerSpec, load

QUESTIONS = ["what colour is the circle ?", "how many shapes ?"]


@pytest.fixture(scope="module")
def evaluated(tiny_llava_dir, tiny_clip_dir):
    """The tiny LLaVA loaded as LLaVA-1.5 was evaluated."""
    return load(tiny_llava_dir, text_encoder=tiny_clip_dir, device="cpu", dtype=torch.float32,
                image_preprocess="pad", prompt_format="vicuna_v1")


def padded(image: np.ndarray, mean: list[float]) -> Image.Image:
    """This test's own expand2square: the image centred on a square canvas of int(mean * 255)."""
    h, w, _ = image.shape
    side = max(h, w)
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[:] = [int(m * 255) for m in mean]
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top:top + h, left:left + w] = image
    return Image.fromarray(canvas)


def test_pad_gives_the_processor_the_image_padded_to_a_square(evaluated, tiny_model, tiny_images):
    processor = evaluated.processor.image_processor
    encoded = evaluated.encode(tiny_images[:2], QUESTIONS)
    expected = processor(images=[padded(i, processor.image_mean) for i in tiny_images[:2]],
                         return_tensors="pt")["pixel_values"]
    assert tiny_images[0].shape == (64, 80, 3)  # wider than high: 8 rows of padding above and below at 80 px
    assert torch.equal(encoded.pixel_values, expected)
    border = encoded.pixel_values[:, :, :4]  # the top rows, [B, 3, 4, W] at 64 px: all padding
    assert float(border.abs().max()) < 0.02  # the mean colour normalises to about zero
    cropped = tiny_model.encode(tiny_images[:2], QUESTIONS)  # an unregistered folder: the processor alone
    assert torch.equal(cropped.pixel_values, processor(images=tiny_images[:2], return_tensors="pt")["pixel_values"])
    assert not torch.allclose(cropped.pixel_values, encoded.pixel_values)


def test_pad_takes_paths_pil_images_and_square_images_alike(evaluated, tiny_images, tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(tiny_images[0]).save(path)
    from_path = evaluated.encode(str(path), QUESTIONS[0])
    from_pil = evaluated.encode(Image.fromarray(tiny_images[0]), QUESTIONS[0])
    from_array = evaluated.encode(tiny_images[0], QUESTIONS[0])
    assert torch.equal(from_path.pixel_values, from_array.pixel_values)
    assert torch.equal(from_pil.pixel_values, from_array.pixel_values)
    square = tiny_images[0][:, :64]
    processor = evaluated.processor.image_processor
    assert torch.equal(evaluated.encode(square, QUESTIONS[0]).pixel_values,
                       processor(images=[square], return_tensors="pt")["pixel_values"])


def test_vicuna_v1_prompt_has_the_system_prompt(evaluated, tiny_model, tiny_images):
    encoded = evaluated.encode(tiny_images[:2], QUESTIONS)
    assert encoded.prompts == [f"{SYSTEM_PROMPT} USER: <image>\n{q} ASSISTANT:" for q in QUESTIONS]
    assert SYSTEM_PROMPT == ("A chat between a curious user and an artificial intelligence assistant. The "
                             "assistant gives helpful, detailed, and polite answers to the user's questions.")
    image_tokens = (encoded.input_ids == evaluated.model.config.image_token_id).sum(1)
    assert image_tokens.tolist() == [64, 64]
    assert tiny_model.encode(tiny_images[0], QUESTIONS[0]).prompts == [f"USER: <image>\n{QUESTIONS[0]} ASSISTANT:"]
    run = evaluated.answer(tiny_images[:2], QUESTIONS, method="rc", max_new_tokens=3)
    assert len(run.texts) == 2 and run.encoded.prompts == encoded.prompts


def test_registered_llava_1_5_defaults_to_pad_and_vicuna_v1(monkeypatch, tiny_llava_dir, tiny_clip_dir):
    assert {(MODELS[name].image_preprocess, MODELS[name].prompt_format) for name in ("llava-1.5-7b", "llava-1.5-13b")} \
        == {("pad", "vicuna_v1")}
    assert (MODELS["shapes"].image_preprocess, MODELS["shapes"].prompt_format) == ("crop", "chat_template")
    monkeypatch.setitem(TEXT_TOWERS, "tiny-clip", TextTowerSpec("transformers", tiny_clip_dir))
    monkeypatch.setitem(MODELS, "tiny-llava-1.5", ModelSpec(tiny_llava_dir, "tiny-clip", "pad", "vicuna_v1"))
    registered = load("tiny-llava-1.5", device="cpu", dtype="float32")
    assert (registered.image_preprocess, registered.prompt_format) == ("pad", "vicuna_v1")
    told = load("tiny-llava-1.5", device="cpu", dtype="float32", image_preprocess="crop", prompt_format="chat_template")
    assert (told.image_preprocess, told.prompt_format) == ("crop", "chat_template")
    unregistered = load(tiny_llava_dir, text_encoder=tiny_clip_dir, device="cpu", dtype="float32")
    assert (unregistered.image_preprocess, unregistered.prompt_format) == ("crop", "chat_template")


@pytest.mark.parametrize("option, value", [("image_preprocess", "square"), ("prompt_format", "vicuna")])
def test_unknown_format_fails_before_loading(tmp_path, option, value):
    with pytest.raises(ValueError, match=f"{option} must be one of"):
        load(tmp_path / "never-read", text_encoder=tmp_path / "nor-this", **{option: value})


def test_released_text_is_the_system_line_at_20_tokens_pooled_last(evaluated, tiny_clip_dir, tiny_images):
    """text_sim under the released preset, recomputed from transformers' CLIPModel directly."""
    from transformers import AutoTokenizer, CLIPModel

    encoded = evaluated.encode(tiny_images[:2], QUESTIONS, preset="released")
    line = f"<s> {SYSTEM_PROMPT} USER:"
    assert encoded.text_inputs == [line, line]
    clip = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    ids = AutoTokenizer.from_pretrained(tiny_clip_dir)([line], max_length=20, truncation=True, padding="max_length",
                                                       return_tensors="pt")["input_ids"]
    with torch.no_grad():
        text = F.normalize(clip.text_projection(clip.text_model(input_ids=ids).last_hidden_state[:, -1]), dim=-1)
        patches = clip.visual_projection(clip.vision_model(encoded.pixel_values).last_hidden_state[:, 1:])
    expected = F.cosine_similarity(text[:, None], patches, dim=-1)  # [B, N]
    assert ids.shape == (1, 20)
    torch.testing.assert_close(encoded.text_sim, expected)


def test_rc_text_weight_reads_the_loaded_clip_width(tiny_model, tiny_images):
    encoded = tiny_model.encode(tiny_images[:3], ["what colour is the circle ?"] * 3)
    inputs = (encoded.features, encoded.cls_attn, encoded.text_sim, encoded.keys)
    via_model = tiny_model.compress(encoded, "rc", budget=12)
    assert torch.equal(via_model.weights, compress(*inputs, budget=12, text_dim=16).weights)  # the tiny CLIP: D = 16
    told = tiny_model.compress(encoded, "rc", budget=12, text_dim=768)
    assert torch.equal(told.weights, compress(*inputs, budget=12).weights)
    assert not torch.equal(told.weights, via_model.weights)
