"""PruMerge and PruMerge+: the released adaptive selection, and the release's own scores (RC's shared ones)."""
import numpy as np
import pytest
import torch

import rclib
from rclib import Fate, Slot
from rclib.speed import llava_like_inputs


def released_plus_centres(attention: torch.Tensor) -> set[int]:
    """The released ``token_prune_merge_advanced_plus`` (if_adaptive=True) on one image, attention [N]: the IQR
    outliers' top-k, then ``arange(0, N - 1, int(int(1 / ratio) / 3))`` less those (the release writes 575 for
    N - 1 at N = 576)."""
    x = attention.numpy()
    q1, q3 = np.percentile(x, 25), np.percentile(x, 75)
    ratio = float((x > q3 + 1.5 * (q3 - q1)).sum()) / len(x)
    top = attention.topk(int(len(x) * ratio)).indices.tolist()
    samples = torch.arange(0, len(x) - 1, int(int(1 / ratio) / 3)).tolist()
    return set(top) | {p for p in samples if p not in top}


@pytest.mark.parametrize("n_outliers", [1, 20, 32, 60, 100])  # strides 192, 9, 6, 3 and 1
def test_prumerge_plus_adds_the_released_uniform_samples(n_outliers):
    g = torch.Generator().manual_seed(n_outliers)
    attention = torch.rand(2, 576, generator=g) * 0.1  # no outlier by itself
    spikes = torch.rand(2, 576, generator=g).argsort(1)[:, :n_outliers]
    attention.scatter_(1, spikes, 1 + torch.rand(2, n_outliers, generator=g))
    tokens, keys = torch.randn(2, 576, 8, generator=g), torch.randn(2, 576, 4, generator=g)
    r = rclib.compress(tokens, attention, keys=keys, method="prumerge+")
    for b in range(2):
        centres = set(torch.nonzero(r.fate[b] == Fate.CENTRE).flatten().tolist())
        assert centres == released_plus_centres(attention[b])
        assert int(r.n_output[b]) == len(centres) + (len(centres) < 576)  # + the extra token of the rest


def test_prumerge_plus_share_follows_the_iqr_count():
    """About 32 IQR outliers of 576 (LLaVA-1.5's) give a stride of 6, about a fifth of the tokens; past 96 outliers
    the stride is 1 and every patch but the last is a centre (the embedded ShapesWorld model's case)."""
    attention = torch.full((2, 576), 1.0)
    attention[0, torch.arange(32) * 18] = 5.0  # 32 outliers, spread
    attention[1, torch.arange(120) * 4] = 5.0  # 120 outliers
    r = rclib.compress(torch.randn(2, 576, 8), attention, keys=torch.randn(2, 576, 4), method="prumerge+")
    assert r.n_output[0] == len(set(range(0, 575, 6)) | set(range(0, 576, 18))) + 1 < 576 // 4
    assert r.n_output[1] == 576 and (r.fate[1] == Fate.CENTRE).sum() == 575  # 575 is the extra token's alone
    flat = rclib.compress(torch.randn(1, 50, 8), torch.full((1, 50), 0.02), keys=torch.randn(1, 50, 4),
                          method="prumerge+")  # no outlier: no sample (the release divides by zero)
    assert flat.n_output.tolist() == [1] and flat.slot[0, 0] == Slot.EXTRA


def test_fixed_budgets_split_their_centres():
    tokens, a, s, keys = llava_like_inputs(2, 144, 16)
    for method, n_top in (("prumerge", 16), ("prumerge+", 4)):  # PruMerge+: a quarter of the K - 1 by attention
        r = rclib.compress(tokens, a, s, keys, method=method, budget=17)
        assert r.n_output.tolist() == [17, 17] and (r.slot == Slot.CENTRE).sum(1).tolist() == [16, 16]
        top = a.topk(n_top, dim=1).indices
        assert bool((r.fate.gather(1, top) == Fate.CENTRE).all())


def test_prumerge_reads_the_last_layer_as_released(tiny_model, tiny_images):
    """The release hooks the last layer's q_proj / k_proj and reads all heads as one: RC's shared scores, so the
    default and scores="shared" agree."""
    encoded = tiny_model.encode(tiny_images[:2], ["what colour is the circle ?", "where is it ?"])
    for method in ("prumerge", "prumerge+"):
        own = tiny_model.compress(encoded, method, None)
        assert torch.equal(own.scores["visual"], encoded.cls_attn)
        direct = rclib.compress(encoded.features, encoded.cls_attn, keys=encoded.keys, method=method)
        shared = tiny_model.compress(encoded, method, None, scores="shared")
        assert torch.equal(own.weights, direct.weights) and torch.equal(own.weights, shared.weights)
