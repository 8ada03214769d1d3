"""VisPruner: the released selection step for step, its own scores by default, RC's on request."""
import pytest
import torch

import rclib
from rclib import Fate
from rclib.methods.vispruner import cosine_gram
from rclib.speed import llava_like_inputs


def reference_vispruner(features, attention, budget, share=0.5, step=8):
    """The released encode_images selection on one image: features [N, C], attention [N] -> kept indices, sorted."""
    unit = features / features.norm(dim=-1, keepdim=True)
    n_important = int(budget * share)
    order = sorted(range(len(attention)), key=lambda i: (-float(attention[i]), i))
    important, residual = order[:n_important], order[n_important:]
    while (r := min(step, len(residual) - (budget - n_important))) > 0:
        a, b = residual[::2], residual[1::2]
        score = (unit[a] @ unit[b].T).max(1).values  # each A token's best match in B, one matrix per round
        ranked = sorted(range(len(a)), key=lambda i: (-float(score[i]), i))
        residual = [a[i] for i in ranked[r:]] + b
    return sorted(important + residual)


@pytest.mark.parametrize("n, budget, share", [(144, 16, 0.5), (144, 64, 0.5), (50, 9, 0.25), (30, 29, 0.5),
                                               (144, 1, 0.5)])
def test_vispruner_equals_the_released_selection(n, budget, share):
    g = torch.Generator().manual_seed(n + budget)
    tokens, attention = torch.randn(2, n, 12, generator=g), torch.rand(2, n, generator=g)
    r = rclib.compress(tokens, attention, method="vispruner", budget=budget, important_share=share)
    assert r.n_output.tolist() == [budget, budget]
    for b in range(2):
        assert r.kept_indices[b].tolist() == reference_vispruner(tokens[b], attention[b], budget, share)


def test_vispruner_follows_the_release_at_llava_width():
    """The release normalises the tokens, then takes dot products; dividing the dot products by the norms
    instead rounds differently (up to ~5e-7 at C = 1024), enough to reorder near-equal scores in later rounds."""
    tokens, attention = llava_like_inputs(1, 576, 1024)[:2]
    r = rclib.compress(tokens, attention, method="vispruner", budget=16)
    assert r.kept_indices[0].tolist() == reference_vispruner(tokens[0], attention[0], 16)


@pytest.mark.parametrize("width", [32, 256])
def test_cosine_gram_equals_the_whole_product(width):
    """Narrow rows take one product, wide ones the mirrored blocks (R = 544 > GRAM_LEAF): the same matrix."""
    rows = torch.randn(2, 544, width, generator=torch.Generator().manual_seed(width))
    unit = torch.nn.functional.normalize(rows, dim=-1)
    torch.testing.assert_close(cosine_gram(unit), unit @ unit.transpose(1, 2), rtol=1e-6, atol=1e-6)


def test_vispruner_with_every_token_important_keeps_the_top_k():
    g = torch.Generator().manual_seed(4)
    tokens, attention = torch.randn(2, 60, 8, generator=g), torch.rand(2, 60, generator=g)
    r = rclib.compress(tokens, attention, method="vispruner", budget=10, important_share=1.0)
    for b in range(2):
        assert r.kept_indices[b].tolist() == sorted(attention[b].topk(10).indices.tolist())


def test_vispruner_diverse_half_spreads_over_distinct_tokens():
    directions = torch.eye(8).repeat_interleave(18, dim=0)[None]  # [1, 144, 8]: 8 kinds of token, 18 copies each
    attention = torch.linspace(1, 0, 144)[None]  # the first kind most attended
    r = rclib.compress(directions, attention, method="vispruner", budget=16)
    kinds = directions[0, r.kept_indices[0]].argmax(1)
    assert len(set(kinds.tolist())) >= 6, "the diverse half reaches most kinds of token (ties: not all of them)"
    top = rclib.compress(directions, attention, method="fastervlm", budget=16)
    assert set(directions[0, top.kept_indices[0]].argmax(1).tolist()) == {0}


def test_peers_read_their_own_scores_unless_told_to_share(tiny_model, tiny_images):
    encoded = tiny_model.encode(tiny_images[:2], ["what colour is the circle ?", "where is it ?"])
    for method in ("vispruner", "fastervlm"):
        own = tiny_model.compress(encoded, method, 8)
        assert torch.equal(own.scores["visual"], encoded.cls_attn_head_mean), f"{method} reads the feature layer's"
        shared = tiny_model.compress(encoded, method, 8, scores="shared")
        assert torch.equal(shared.scores["visual"], encoded.cls_attn), "scores='shared': RC's"
        top = set(encoded.cls_attn_head_mean[0].topk(4).indices.tolist())  # the important half, from its own scores
        assert top <= set(torch.nonzero(own.fate[0] == Fate.KEPT).flatten().tolist())
    rc = tiny_model.compress(encoded, "rc", 8)
    assert torch.equal(rc.scores["visual"], tiny_model.compress(encoded, "rc", 8, scores="shared").scores["visual"])
    with pytest.raises(ValueError, match="scores must be one of"):
        tiny_model.compress(encoded, "fastervlm", 8, scores="penultimate")
