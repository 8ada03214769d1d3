import pytest
import torch

from rclib.shapes.evaluate import (
    cls_concentration,
    named_on_grid,
    pointing,
    targets_on_grid,
)
from rclib.shapes.world import NUM_PATCHES, patch_mask, sample_vqa


def test_cls_concentration_exact():
    uniform = torch.full((2, NUM_PATCHES), 1.0 / NUM_PATCHES)
    assert cls_concentration(uniform) == pytest.approx({"top1": 6 / 576, "top10": 58 / 576})
    peaked = torch.zeros(1, NUM_PATCHES)
    peaked[0, :6] = 0.45 / 6  # half of the attention (0.9 to patches) on the top 1%
    peaked[0, 6:] = 0.45 / 570
    assert cls_concentration(peaked)["top1"] == pytest.approx(0.5)


def test_pointing_reads_the_argmax():
    named = torch.zeros(2, NUM_PATCHES, dtype=torch.bool)
    named[0, 10] = named[1, 20] = True
    scores = torch.zeros(2, NUM_PATCHES)
    scores[0, 10] = scores[1, 21] = 1.0
    assert pointing(scores, named).tolist() == [True, False]


def test_targets_and_named_masks_on_the_grid():
    samples = sample_vqa(0, 10)
    targets, named = targets_on_grid(samples), named_on_grid(samples)
    assert targets.shape == named.shape == (10, NUM_PATCHES)
    for s, t, n in zip(samples, targets, named):
        assert torch.equal(t, torch.from_numpy(patch_mask(s.target_pixel_mask).reshape(-1))) or not s.target_pixel_mask.any()
        if s.named:
            assert n.any() and torch.equal(n & ~t, torch.zeros_like(n))
        else:
            assert not n.any()
