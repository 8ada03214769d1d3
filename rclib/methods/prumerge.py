"""PruMerge and PruMerge+ (Shang et al., 2024): IQR-selected [CLS]-attention centres merge their neighbours.

PruMerge: n = #(a > Q3 + 1.5 IQR) centres = topk(a, n); each absorbs its 32 nearest tokens by key
cosine, x_i + sum_j a_j x_j; plus one extra token, the a-weighted sum of all non-centre tokens.
PruMerge+ adds spatially uniform samples to the centres before the merge (3 per IQR centre by
default, roughly the paper's 5.5% -> 25% of tokens). With a fixed budget K: K - 1 centres + extra
(PruMerge+: a quarter of the K - 1 from IQR order, the rest uniform).
"""
from __future__ import annotations

import torch

from rclib.filters import IQR_FACTOR, outlier_count, topk_mask
from rclib.methods.common import IQR_FACTOR_CONTROL, KNN_K_CONTROL, budget_tensor, merge_into_centres, uniform_mask
from rclib.result import CompressionResult

CONTROLS = {"knn_k": KNN_K_CONTROL, "iqr_factor": IQR_FACTOR_CONTROL}  # the options the explorer shows


def prumerge(tokens: torch.Tensor, cls_attn: torch.Tensor, text_sim, keys: torch.Tensor | None, budget=None,
             *, knn_k: int = 32, uniform_per_centre: int = 0, iqr_factor: float = IQR_FACTOR,
             method: str = "prumerge") -> CompressionResult:
    """tokens [B, N, C], cls_attn [B, N], keys [B, N, Ck]; text_sim is ignored."""
    B, N, _ = tokens.shape
    a = cls_attn.float()
    if budget is None:
        n_iqr = outlier_count(a, "iqr", iqr_factor=iqr_factor)
        n_uniform = n_iqr * uniform_per_centre
    else:
        slots = budget_tensor(budget, B, tokens.device) - 1
        n_iqr = slots if uniform_per_centre == 0 else (slots + uniform_per_centre) // (uniform_per_centre + 1)
        n_uniform = slots - n_iqr
    centres = topk_mask(a, n_iqr)
    centres = centres | uniform_mask(~centres, n_uniform)
    everything = torch.ones_like(centres)
    none = torch.zeros_like(centres)
    return merge_into_centres(tokens, a, none, none, centres, everything, keys, None, knn_k, method,
                              {"visual": cls_attn})


def prumerge_plus(tokens, cls_attn, text_sim, keys, budget=None, *, knn_k: int = 32,
                  uniform_per_centre: int = 3, iqr_factor: float = IQR_FACTOR) -> CompressionResult:
    """PruMerge+ : PruMerge with ``uniform_per_centre`` spatially uniform samples per IQR centre."""
    return prumerge(tokens, cls_attn, text_sim, keys, budget, knn_k=knn_k,
                    uniform_per_centre=uniform_per_centre, iqr_factor=iqr_factor, method="prumerge+")
