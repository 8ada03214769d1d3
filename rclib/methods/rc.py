"""Recoverable Compression (arXiv 2409.01179): visual filter, text recovery, KNN merge, token merger.

    a: [CLS] attention of the last vision layer     s: cosine(question embedding, projected patch)
    1. visual filter      n_v = filter(a);                                   V = topk(a, n_v)
    2. text recovery      n_t = (N - n_v) * filter(s with V pushed to min s) / N;  T = topk(s, n_t) off V
    3. secondary recovery the rest R: n_c = filter(a on R, 10 neighbours);   C = topk(a on R, n_c)
                          centre i absorbs its 32 nearest of R by cos(key_i, key_j) + w * s_j:
                          x_i + sum_j a_j x_j;  one extra token sum_{j in R, not a centre} a_j x_j
    4. token merger       [V and T in original order] + [centres, original order] + [extra]

Defaults follow the paper and correct the released code; every released-code behaviour is a switch
(``RCConfig``). With a fixed ``budget`` K the stages share K - 1 slots in the ``budget_split``
proportions (visual, text, centres) and the extra token takes the last one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rclib.filters import IQR_FACTOR, outlier_count, topk_mask
from rclib.methods.common import budget_tensor, cosine_matrix, merge_into_centres
from rclib.result import CompressionResult


@dataclass
class RCConfig:
    rule: str = "lof"  # dynamic scale filter: "lof" (released code) or "iqr" (PruMerge's)
    n_neighbors: int = 20  # LOF neighbours for the visual and text stages
    iqr_factor: float = IQR_FACTOR  # IQR rule: outlier above Q3 + iqr_factor * IQR (PruMerge's 1.5)
    centre_neighbors: int = 10  # LOF neighbours for the merge-centre count
    text_stage: bool = True  # False: skip text recovery (and the text term of the KNN similarity)
    knn_k: int = 32  # neighbours each centre absorbs
    knn_text_weight: float = 50 * 768 ** -0.5  # w in cos(key) + w * s: released 50 x its 768^-0.5 score scale
    centre_count: str = "remaining"  # "remaining": int(M * ratio); "released": int(C * ratio), C = feature width
    key_indexing: str = "correct"  # "released": keys gathered with R-indices from the full grid (wrong patches)
    budget_split: tuple[float, float, float] = (0.5, 0.25, 0.25)  # fixed budget: visual, text, centres

    def __post_init__(self):
        assert self.centre_count in ("remaining", "released"), "centre_count: 'remaining' or 'released'"
        assert self.key_indexing in ("correct", "released"), "key_indexing: 'correct' or 'released'"
        assert abs(sum(self.budget_split) - 1) < 1e-6, f"budget_split must sum to 1, got {self.budget_split}"


def stage_counts(budget: torch.Tensor, split: tuple[float, float, float], use_text: bool) -> tuple[torch.Tensor, ...]:
    """Fixed budget K -> (n_v, n_t, n_c): K - 1 slots shared in ``split`` proportions, extra token last."""
    slots = budget - 1
    frac_v, frac_t, frac_c = split if use_text else (split[0] + split[1], 0.0, split[2])
    n_t = (slots * frac_t).round().long()
    n_c = (slots * frac_c).round().long()
    return (slots - n_t - n_c).clamp(min=0), n_t, n_c


def released_key_order(keys: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
    """The released code's indexing slip: the r-th remaining token gets the key of grid token r."""
    compact = (remaining.long().cumsum(1) - 1).clamp(min=0)  # [B, N] rank among the remaining tokens
    wrong = keys.gather(1, compact[:, :, None].expand_as(keys))
    return torch.where(remaining[:, :, None], wrong, keys)


def recoverable_compression(tokens: torch.Tensor, cls_attn: torch.Tensor, text_sim: torch.Tensor | None,
                            keys: torch.Tensor | None, budget=None, **options) -> CompressionResult:
    """tokens [B, N, C], cls_attn [B, N], text_sim [B, N], keys [B, N, Ck] -> result with K <= N slots."""
    cfg = RCConfig(**options)
    assert keys is not None, "rc merges by key similarity: pass the last vision layer's keys [B, N, Ck]"
    use_text = cfg.text_stage
    assert text_sim is not None or not use_text, "rc needs text_sim [B, N]; or pass text_stage=False"
    B, N, C = tokens.shape
    a = cls_attn.float()
    s = text_sim.float() if use_text else torch.zeros_like(a)

    if budget is not None:
        n_v, n_t, n_c = stage_counts(budget_tensor(budget, B, tokens.device), cfg.budget_split, use_text)
    # 1. visual filter
    if budget is None:
        n_v = outlier_count(a, cfg.rule, cfg.n_neighbors, iqr_factor=cfg.iqr_factor)
    visual = topk_mask(a, n_v)
    # 2. text information recovery, among the tokens the visual filter left
    if budget is None and use_text:
        s_pushed = torch.where(visual, s.min(1, keepdim=True).values, s)
        n_t = (N - n_v) * outlier_count(s_pushed, cfg.rule, cfg.n_neighbors, iqr_factor=cfg.iqr_factor) // N
    elif budget is None:
        n_t = torch.zeros_like(n_v)
    text = topk_mask(s, n_t, valid=~visual)
    # 3. secondary recovery: centres among the rest, each merging its nearest neighbours
    rest = ~(visual | text)
    if budget is None:
        n_c = outlier_count(a, cfg.rule, cfg.centre_neighbors, valid=rest, iqr_factor=cfg.iqr_factor)
        if cfg.centre_count == "released":
            n_c = C * n_c // rest.sum(1).clamp(min=1)
    centres = topk_mask(a, n_c, valid=rest)
    rc_keys = released_key_order(keys, rest) if cfg.key_indexing == "released" else keys
    similarity = cosine_matrix(rc_keys) + cfg.knn_text_weight * s[:, None, :]  # [B, N(centre), N(cand)]
    # 4. token merger: kept and recovered in original order, then the centres, then the extra token
    scores = {"visual": cls_attn, "text": text_sim} if use_text else {"visual": cls_attn}
    return merge_into_centres(tokens, a, visual, text, centres, rest, similarity, cfg.knn_k, "rc", scores)
