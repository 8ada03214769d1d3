"""DivPrune (Alvar et al., 2025): keep the K most mutually diverse tokens (greedy max-min), nothing merged.

Distance is 1 - cosine between the visual tokens. Start from the token farthest from its nearest
neighbour, then repeatedly add the token whose nearest kept token is farthest. The greedy loop runs
over the K picks, four kernels each (argmax, an index, a row read, a minimum) and no host sync: a kept
token's own distance is -inf, so taking the minimum with its row also takes it out of the running.
"""
from __future__ import annotations

import torch

from rclib.methods.common import budget_int, cosine_matrix, keep_and_drop
from rclib.result import CompressionResult


def divprune(tokens: torch.Tensor, cls_attn=None, text_sim=None, keys=None, budget=None) -> CompressionResult:
    """tokens [B, N, C] -> the K = budget (default 64/576 of N) most diverse tokens, original order."""
    N = tokens.shape[1]
    k = min(budget_int(budget, N), N)
    return keep_and_drop(tokens, max_min_picks(1 - cosine_matrix(tokens), k), "divprune", {}, K=k)


def max_min_picks(distance: torch.Tensor, k: int) -> torch.Tensor:
    """[B, N] bool: ``k`` tokens picked greedily by max-min ``distance`` [B, N, N] (overwritten: its diagonal).

    nearest [B, N] is each token's distance to its nearest pick so far (-inf once picked); the first pick is
    the token farthest from its nearest other token.
    """
    B, N, _ = distance.shape
    diagonal = distance.diagonal(dim1=1, dim2=2)  # [B, N] a view: each token's distance to itself
    diagonal.fill_(float("inf"))
    nearest = distance.min(2).values  # [B, N] distance to the nearest other token
    diagonal.fill_(float("-inf"))
    rows = distance.view(B * N, N)
    first_row = torch.arange(0, B * N, N, device=distance.device)  # [B] row of token 0 of each sample in rows
    picks = []
    for step in range(k):
        pick = nearest.argmax(1)  # [B]
        picks.append(pick)
        if step + 1 < k:
            chosen = rows.index_select(0, first_row + pick)  # [B, N] distance to the pick
            nearest = chosen if step == 0 else torch.minimum(nearest, chosen)
    return torch.zeros(B, N, dtype=torch.bool, device=distance.device).scatter_(1, torch.stack(picks, 1), True)
