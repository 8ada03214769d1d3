"""CDPruner (Zhang et al., "Beyond Attention or Similarity: Maximizing Conditional Diversity for Token
Pruning in MLLMs", NeurIPS 2025, arXiv 2506.10967): keep the K tokens of a greedy conditional DPP MAP.

The kernel conditions feature similarity on the question: L_ij = r_i * cos(x_i, x_j) * r_j, where r is each
token's relevance to the question's CLIP text embedding, min-max normalised per image to (0, 1]. A DPP
favours subsets that are relevant (large r) and diverse (small cosine); the greedy MAP adds, K times, the
token with the largest gain in log det L_S, tracked with incremental Cholesky rows (Chen, Zhang and Zhou,
NeurIPS 2018): d_j^2 is token j's remaining gain, each pick i adds the row e = (L_i - c_i . C) / d_i and
every d_j^2 drops by e_j^2. rclib keeps L - C^T C whole instead (one rank-1 product a pick, a fixed
handful of kernels a step on a GPU). Nothing is merged; kept tokens stay in original order.

Where rclib departs from the released code:
- relevance is rclib's ``text_sim``, the cosine between the question embedding and each patch of the
  vision tower's FINAL layer through the visual projection (RC's text score). The released code projects
  the feature layer's (penultimate) patches through post-layernorm and the visual projection, averages
  over 77-token chunks of the prompt, and negates the cosine before normalising (``negate=True`` gives
  that sign on rclib's score);
- the cosine kernel is over the vision features the LLM would read, before the projector (the released
  code takes them after LLaVA's projector): rclib's methods run before the projector;
- min-max normalisation per sample (the released code normalises over the whole batch, so a batch would
  differ from its samples);
- when the kernel's rank is used up (K larger than the feature width, or duplicated tokens), the remaining
  gains are zero and the released code divides by them; rclib fills the rest of the budget with the most
  relevant tokens left.
"""
from __future__ import annotations

import torch

from rclib.filters import topk_mask
from rclib.methods.common import budget_int, budget_tensor, cosine_matrix, keep_and_drop
from rclib.result import CompressionResult

EXHAUSTED = 1e-6  # a gain below this share of the first pick's is zero: the kernel's rank is used up


def relevance(text_sim: torch.Tensor, negate: bool = False) -> torch.Tensor:
    """[B, N] text relevance min-max normalised per row to (0, 1] (the smallest gets 1e-6 / range)."""
    r = -text_sim.float() if negate else text_sim.float()
    low, high = r.min(1, keepdim=True).values, r.max(1, keepdim=True).values
    return (r - low + 1e-6) / (high - low).clamp(min=1e-6)


def conditional_kernel(tokens: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """[B, N, N] L = diag(r) S diag(r), S the cosine similarity of the tokens [B, N, C], r [B, N]."""
    return relevance[:, :, None] * cosine_matrix(tokens) * relevance[:, None, :]


def greedy_dpp(kernel: torch.Tensor, count: torch.Tensor, fallback: torch.Tensor,
               steps: int | None = None) -> torch.Tensor:
    """[B, N] bool: ``count[b]`` tokens picked by the greedy MAP of the DPP with ``kernel`` [B, N, N].

    Each row stops after its own count; once a row's best gain is (numerically) zero, its remaining picks
    follow ``fallback`` [B, N] (highest first) instead. steps: the largest count when the caller knows it on
    the host (no host sync).

    The loop keeps the kernel conditioned on the picks so far, L - C^T C (C: the incremental Cholesky rows of
    Chen et al.), whose diagonal is every token's gain d_j^2. A pick i with gain d_i^2 adds the row
    e = (its row of L - C^T C) / d_i, and one rank-1 product, row^T row / d_i^2, conditions the kernel on it,
    diagonal included. The same quantities as the released code's loop, summed in another order; a step is
    seven aten ops whatever N and B (the best gain, the pick's row, its division, the rank-1 product, the
    pick's row set to -inf), at N^2 instead of t N multiply-adds. A row's gains never rise once exhausted, so
    where the DPP ran dry its picks are set aside after the loop and the fallback fills them.
    """
    B, N, _ = kernel.shape
    if steps is None:
        steps = int(count.max()) if B else 0
    conditioned = kernel.clone()  # [B, N, N] L - C^T C; a picked token's row is -inf
    gain = conditioned.diagonal(dim1=1, dim2=2)[:, None, :]  # [B, 1, N] view: d_j^2, -inf once picked
    floor = gain.amax(2, keepdim=True) * EXHAUSTED  # [B, 1, 1]
    bests, picks = [], []
    for t in range(steps):
        best, pick = gain.max(2, keepdim=True)  # [B, 1, 1]
        bests.append(best)
        picks.append(pick)
        if t + 1 == steps:
            break
        pick_row = pick.expand(B, 1, N)
        row = conditioned.gather(1, pick_row)  # [B, 1, N] d_i e: the pick's Cholesky row times d_i
        conditioned.baddbmm_(row.transpose(1, 2), row / best, alpha=-1).scatter_(1, pick_row, float("-inf"))
    # from the first dry step on (a NaN gain only follows one: a division by a gain <= 0)
    exhausted = ~(torch.cat(bests, 1)[..., 0] > floor[..., 0]).cummin(1).values  # [B, T]
    taken = ~exhausted & (torch.arange(steps, device=kernel.device) < count[:, None])  # [B, T] DPP picks that count
    picked = torch.zeros(B, N, device=kernel.device).scatter_add_(1, torch.cat(picks, 1)[..., 0], taken.float()) > 0
    return picked | topk_mask(fallback, count.clamp(max=N) - taken.sum(1), valid=~picked)


def cdpruner(tokens: torch.Tensor, cls_attn, text_sim: torch.Tensor, keys=None, budget=None, *,
             negate: bool = False) -> CompressionResult:
    """tokens [B, N, C], text_sim [B, N] -> the K = budget (default 64/576 of N) tokens of the greedy
    conditional DPP, original order. negate: the released code's sign of the relevance."""
    B, N, _ = tokens.shape
    k = min(budget_int(budget, N), N)
    r = relevance(text_sim, negate)
    keep = greedy_dpp(conditional_kernel(tokens, r), budget_tensor(k, B, tokens.device), r, steps=k)
    return keep_and_drop(tokens, keep, "cdpruner", {"text": text_sim, "relevance": r}, K=k)
