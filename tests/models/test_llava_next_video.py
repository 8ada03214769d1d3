"""LLaVA-NeXT-Video on still images: a family added as one file (rclib/models/families/llava_next_video.py)."""
import torch
from family_checks import QUESTIONS


def test_full_is_identical_to_transformers_and_batches_answer_as_single(tiny_next_video_dir, tiny_clip_dir,
                                                                         tiled_images):
    from rclib.models import load

    model = load(tiny_next_video_dir, text_encoder=tiny_clip_dir, device="cpu", dtype=torch.float32)
    encoded = model.encode(tiled_images, QUESTIONS)
    batch = model.processor(images=tiled_images, text=encoded.prompts, padding=True, return_tensors="pt")
    generated = model.model.generate(**batch, do_sample=False, max_new_tokens=6)
    ours = model.generate_ids(encoded, model.compress(encoded, "full"), 6)
    assert torch.equal(ours, generated[:, batch["input_ids"].shape[1]:])
    run = model.answer(tiled_images, QUESTIONS, method="rc", max_new_tokens=6)
    for b in range(3):
        assert run.texts[b] == model.answer(tiled_images[b], QUESTIONS[b], method="rc", max_new_tokens=6).texts[0]
