"""CDPruner: the greedy conditional DPP picks what a brute-force log-det greedy picks; relevance matters."""
import pytest
import torch

from rclib import Fate, compress
from rclib.methods.cdpruner import conditional_kernel, greedy_dpp, relevance


def brute_force_greedy(kernel: torch.Tensor, k: int) -> set[int]:
    """Add, k times, the item that maximises det(L_S) (float64)."""
    kernel = kernel.double()
    chosen: list[int] = []
    for _ in range(k):
        gains = {j: torch.linalg.det(kernel[chosen + [j]][:, chosen + [j]]) for j in range(len(kernel)) if j not in chosen}
        chosen.append(max(gains, key=gains.get))
    return set(chosen)


def cholesky_greedy(kernel: torch.Tensor, k: int) -> set[int]:
    """Chen et al.'s fast greedy MAP as the released code writes it (incremental Cholesky rows), float64."""
    kernel = kernel.double()
    rows, gains, chosen = torch.zeros(k, len(kernel), dtype=torch.float64), kernel.diagonal().clone(), []
    for t in range(k):
        pick = int(gains.argmax())
        chosen.append(pick)
        rows[t] = (kernel[pick] - rows[:t, pick] @ rows[:t]) / gains[pick].sqrt()
        gains -= rows[t] ** 2
        gains[pick] = float("-inf")
    return set(chosen)


@pytest.mark.parametrize("seed, n, width, counts, reference",
                         [(seed, 12, 8, (5, 3), brute_force_greedy) for seed in range(5)]
                         + [(seed, 144, 32, (24, 24), cholesky_greedy) for seed in range(3)])
def test_greedy_dpp_picks_what_the_reference_picks(seed, n, width, counts, reference):
    """The conditioned-kernel loop (float32) picks what the log-det greedy picks by brute force, and at a grid's
    size what the released Cholesky loop picks (both float64)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(2, n, width, generator=g)
    r = relevance(torch.randn(2, n, generator=g))
    kernel = conditional_kernel(tokens, r)
    picked = greedy_dpp(kernel, torch.tensor(counts), r)
    for b, k in enumerate(counts):
        assert set(torch.nonzero(picked[b]).flatten().tolist()) == reference(kernel[b], k)


def test_relevance_normalisation_and_sign():
    s = torch.tensor([[0.1, 0.3, 0.2], [2.0, 2.0, 1.0]])
    torch.testing.assert_close(relevance(s), torch.tensor([[1e-6 / 0.2, 1.0 + 1e-6 / 0.2, 0.5 + 1e-6 / 0.2],
                                                           [1.0 + 1e-6, 1.0 + 1e-6, 1e-6]]))
    torch.testing.assert_close(relevance(s, negate=True)[1], torch.tensor([1e-6, 1e-6, 1.0 + 1e-6]))


def test_text_relevance_steers_the_choice():
    """Two identical clusters of tokens: the DPP takes one token of each, from the more relevant copy."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 4, 16, generator=g)
    tokens = torch.cat([base, base + 1e-3 * torch.randn(1, 4, 16, generator=g)], 1)  # tokens 4..7 copy 0..3
    text = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])
    r = compress(tokens, text_sim=text, method="cdpruner", budget=4)
    assert torch.nonzero(r.fate[0] == Fate.KEPT).flatten().tolist() == [4, 5, 6, 7]
    flipped = compress(tokens, text_sim=text.flip(1), method="cdpruner", budget=4)
    assert torch.nonzero(flipped.fate[0] == Fate.KEPT).flatten().tolist() == [0, 1, 2, 3]


def test_budget_beyond_the_kernel_rank_fills_with_relevance():
    """Width 2: the kernel has rank 2; the other picks follow relevance, and exactly K tokens come out."""
    g = torch.Generator().manual_seed(1)
    tokens, text = torch.randn(1, 10, 2, generator=g), torch.arange(10.0)[None]
    r = compress(tokens, text_sim=text, method="cdpruner", budget=6)
    kept = set(torch.nonzero(r.fate[0] == Fate.KEPT).flatten().tolist())
    assert len(kept) == 6 and {6, 7, 8, 9} <= kept  # the 4 fallback picks are the most relevant left
    assert torch.isfinite(r.tokens).all()


def test_needs_text_sim():
    with pytest.raises(ValueError, match="needs text_sim"):
        compress(torch.randn(1, 9, 4), method="cdpruner", budget=3)
