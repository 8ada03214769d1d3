"""CDPruner (Zhang et al., "Beyond Attention or Similarity: Maximizing Conditional Diversity for Token
Pruning in MLLMs", NeurIPS 2025, arXiv 2506.10967): keep the K tokens of a greedy conditional DPP MAP.

The kernel conditions feature similarity on the question: L_ij = r_i * cos(x_i, x_j) * r_j, where r is each
token's relevance to the question's CLIP text embedding, min-max normalised per image to (0, 1]. A DPP
favours subsets that are relevant (large r) and diverse (small cosine); the greedy MAP adds, K times, the
token with the largest gain in log det L_S, tracked with incremental Cholesky rows (Chen, Zhang and Zhou,
NeurIPS 2018): d_j^2 is token j's remaining gain, each pick i adds the row e = (L_i - c_i . C) / d_i and
every d_j^2 drops by e_j^2. Nothing is merged; kept tokens stay in original order.

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

from rclib.methods.common import budget_tensor, cosine_matrix, default_budget, keep_and_drop
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


def greedy_dpp(kernel: torch.Tensor, count: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """[B, N] bool: ``count[b]`` tokens picked by the greedy MAP of the DPP with ``kernel`` [B, N, N].

    Each row stops after its own count; once a row's best gain is (numerically) zero, its remaining picks
    follow ``fallback`` [B, N] (highest first) instead.
    """
    B, N, _ = kernel.shape
    rows = torch.arange(B, device=kernel.device)
    steps = int(count.max()) if B else 0
    cholesky = kernel.new_zeros(steps, B, N)  # [T, B, N] the incremental Cholesky rows c_t
    gain = torch.diagonal(kernel, dim1=1, dim2=2).clone()  # [B, N] d_j^2
    floor = gain.max(1).values * EXHAUSTED  # [B]
    picked = torch.zeros(B, N, dtype=torch.bool, device=kernel.device)
    for t in range(steps):
        best = gain.masked_fill(picked, float("-inf")).max(1)
        exhausted = best.values <= floor  # [B]
        pick = torch.where(exhausted, fallback.masked_fill(picked, float("-inf")).argmax(1), best.indices)
        row = kernel[rows, pick] - torch.einsum("tb,tbn->bn", cholesky[:t, rows, pick], cholesky[:t])  # [B, N]
        row = torch.where(exhausted[:, None], 0.0, row / best.values.clamp(min=1e-30).sqrt()[:, None])
        cholesky[t] = row
        gain = gain - row.square()
        picked[rows, pick] |= t < count  # rows whose budget is used up pick nothing more
    return picked


def cdpruner(tokens: torch.Tensor, cls_attn, text_sim: torch.Tensor, keys=None, budget=None, *,
             negate: bool = False) -> CompressionResult:
    """tokens [B, N, C], text_sim [B, N] -> the K = budget (default 64/576 of N) tokens of the greedy
    conditional DPP, original order. negate: the released code's sign of the relevance."""
    B, N, _ = tokens.shape
    count = budget_tensor(budget or default_budget(N), B, tokens.device).clamp(max=N)
    r = relevance(text_sim, negate)
    keep = greedy_dpp(conditional_kernel(tokens, r), count, r)
    return keep_and_drop(tokens, keep, "cdpruner", {"text": text_sim, "relevance": r})
