"""LLaVA-NeXT-Video on still images: a family added as one file (rclib/models/families/llava_next_video.py)."""
import torch
from family_checks import assert_batch_equals_single, assert_full_is_transformers


def test_full_is_identical_to_transformers_and_batches_answer_as_single(tiny_next_video_dir, tiny_clip_dir,
                                                                         tiled_images):
    from rclib.models import load

    model = load(tiny_next_video_dir, text_encoder=tiny_clip_dir, device="cpu", dtype=torch.float32)
    assert_full_is_transformers(model, tiled_images)
    assert_batch_equals_single(model, tiled_images, "rc", None)
