"""PruMerge and PruMerge+ (Shang et al., 2024; code github.com/42Shawn/LLaVA-PruMerge): IQR-selected [CLS]-attention
centres merge their neighbours.

PruMerge: n = #(a > Q3 + 1.5 IQR) centres = topk(a, n); each absorbs its 32 nearest tokens by key
cosine, x_i + sum_j a_j x_j; plus one extra token, the a-weighted sum of all non-centre tokens.
PruMerge+ adds spatially uniform samples to the centres before the merge, by the released rule: the patches
0, s, 2s, ... below N - 1 that are not centres already, s = floor(floor(N / n) / 3). On LLaVA-1.5 (n about 32 of
576: s = 6) that is about 90 more, some 21% of the tokens in all (the paper: about 25%); once n > N / 6, s = 1 and
every patch below N - 1 is a centre. With a fixed budget K (rclib's, for the curves): K - 1 centres + extra
(PruMerge+: a quarter of the K - 1 from IQR order, the rest at an even stride through the other tokens).

Scores: the release hooks the q_proj and k_proj of the last vision layer (``layers[23]`` of CLIP-L/336's 24) and
reads softmax(q k^T / sqrt(C)) with all heads as one, and that layer's keys: RC's shared scores, which RC took
from it (``MethodSpec.scores == "shared"`` is PruMerge's own source).

Where rclib departs: the release divides by zero where no token is an outlier; rclib then adds no sample. The
release writes 575 for N - 1 (N = 576). Centres go to the LLM in original order (the release: IQR centres by
attention, then the samples).
"""
from __future__ import annotations

import torch

from rclib.filters import IQR_FACTOR, outlier_count, topk_mask
from rclib.methods.common import (
    IQR_FACTOR_CONTROL,
    KNN_K_CONTROL,
    budget_int,
    merge_into_centres,
    merge_sizes,
    uniform_mask,
)
from rclib.result import CompressionResult

CONTROLS = {"knn_k": KNN_K_CONTROL, "iqr_factor": IQR_FACTOR_CONTROL}  # the options the explorer shows


def uniform_samples(n_iqr: torch.Tensor, n_tokens: int, per_centre: int) -> torch.Tensor:
    """[B, N] bool: the released PruMerge+'s spatially uniform samples for n = n_iqr[b] IQR centres (long [B]):
    patches 0, s, 2s, ... below N - 1, s = floor(floor(N / n) / per_centre) (at least 1); none where n = 0."""
    n = n_iqr.clamp(min=1)[:, None]  # [B, 1]
    stride = (n_tokens // n // per_centre).clamp(min=1)  # [B, 1]
    patch = torch.arange(n_tokens, device=n_iqr.device)  # [N]
    return (patch % stride == 0) & (patch < n_tokens - 1) & (n_iqr[:, None] > 0)


def prumerge(tokens: torch.Tensor, cls_attn: torch.Tensor, text_sim, keys: torch.Tensor | None, budget=None,
             *, knn_k: int = 32, uniform_per_centre: int = 0, iqr_factor: float = IQR_FACTOR,
             method: str = "prumerge") -> CompressionResult:
    """tokens [B, N, C], cls_attn [B, N], keys [B, N, Ck]; text_sim is ignored. uniform_per_centre: the divisor
    of PruMerge+'s sampling stride (about that many samples per IQR centre); 0: none (PruMerge)."""
    N = tokens.shape[1]
    a = cls_attn.float()
    if budget is None:  # the scores decide the count: read on the host for the output size
        n_iqr = outlier_count(a, "iqr", iqr_factor=iqr_factor, check=False)  # [B] (compress checked the scores)
        centres = topk_mask(a, n_iqr)
        if uniform_per_centre:
            centres = centres | uniform_samples(n_iqr, N, uniform_per_centre)
        sizes = None
    else:  # the same counts in every row, known on the host: no host sync
        slots = budget_int(budget) - 1
        n_iqr = slots if uniform_per_centre == 0 else (slots + uniform_per_centre) // (uniform_per_centre + 1)
        centres = topk_mask(a, n_iqr)
        centres = centres | uniform_mask(~centres, slots - n_iqr)
        sizes = merge_sizes(0, N, slots, "if_absorbed")
    everything = torch.ones_like(centres)
    none = torch.zeros_like(centres)
    return merge_into_centres(tokens, a, none, none, centres, everything, keys, None, knn_k, method,
                              {"visual": cls_attn}, sizes=sizes)


def prumerge_plus(tokens, cls_attn, text_sim, keys, budget=None, *, knn_k: int = 32,
                  uniform_per_centre: int = 3, iqr_factor: float = IQR_FACTOR) -> CompressionResult:
    """PruMerge+ : PruMerge with spatially uniform samples, about ``uniform_per_centre`` per IQR centre."""
    return prumerge(tokens, cls_attn, text_sim, keys, budget, knn_k=knn_k,
                    uniform_per_centre=uniform_per_centre, iqr_factor=iqr_factor, method="prumerge+")
