"""DivPrune (Alvar et al., 2025): keep the K most mutually diverse tokens (greedy max-min), nothing merged.

Distance is 1 - cosine between the visual tokens. Start from the token farthest from its nearest
neighbour, then repeatedly add the token whose nearest kept token is farthest. The greedy loop runs
over the K picks (vectorised over the batch and the tokens), as the method is sequential by nature.
"""
from __future__ import annotations

import torch

from rclib.methods.common import budget_tensor, cosine_matrix, default_budget, keep_and_drop
from rclib.result import CompressionResult


def divprune(tokens: torch.Tensor, cls_attn=None, text_sim=None, keys=None, budget=None) -> CompressionResult:
    """tokens [B, N, C] -> the K = budget (default 64/576 of N) most diverse tokens, original order."""
    B, N, _ = tokens.shape
    k = budget_tensor(budget or default_budget(N), B, tokens.device).clamp(max=N)
    distance = 1 - cosine_matrix(tokens)  # [B, N, N]
    keep = torch.zeros(B, N, dtype=torch.bool, device=tokens.device)
    isolated = distance.masked_fill(torch.eye(N, dtype=torch.bool, device=tokens.device), float("inf"))
    nearest_kept = isolated.min(2).values  # first pick: the most isolated token
    for step in range(int(k.max()) if B else 0):  # an empty batch picks nothing
        pick = nearest_kept.masked_fill(keep, float("-inf")).argmax(1)  # [B]
        active = step < k  # rows whose budget is not used up
        keep[active, pick[active]] = True
        chosen = distance.gather(1, pick[:, None, None].expand(B, 1, N)).squeeze(1)  # [B, N] distance to pick
        nearest_kept = chosen if step == 0 else torch.minimum(nearest_kept, chosen)
    return keep_and_drop(tokens, keep, "divprune", {})
