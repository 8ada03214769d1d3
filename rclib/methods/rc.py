"""Recoverable Compression (arXiv 2409.01179): visual filter, text recovery, KNN merge, token merger.

    a: [CLS] attention of the last vision layer     s: cosine(question embedding, projected patch)
    1. visual filter      n_v = filter(a);                                   V = topk(a, n_v)
    2. text recovery      n_t = (N - n_v) * filter(s with V pushed to min s) / N;  T = topk(s, n_t) off V
    3. secondary recovery the rest R: n_c = filter(a on R, 10 neighbours);   C = topk(a on R, n_c)
                          centre i absorbs its 32 nearest of R by cos(key_i, key_j) + w * s_j, w = 50 / sqrt(D):
                          x_i + sum_j a_j x_j;  one extra token sum_{j in R, not a centre} a_j x_j
    4. token merger       [V and T in original order] + [centres, original order] + [extra]

Defaults follow the paper and correct the released code; every released-code behaviour is a switch
(``RCConfig``), and ``preset="released"`` turns them all on at once (docs/released.md lists them).
With a fixed ``budget`` K the stages share K - 1 slots in the ``budget_split`` proportions (visual,
text, centres) and the extra token takes the last one.
"""
from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from rclib.filters import IQR_FACTOR, RULES, outlier_count, topk_mask
from rclib.methods.common import (
    EXTRA_TOKEN_RULES,
    IQR_FACTOR_CONTROL,
    KNN_K_CONTROL,
    merge_into_centres,
    merge_sizes,
)
from rclib.methods.registry import Control
from rclib.result import CompressionResult

RELEASED_TEXT_WEIGHT = 50.0  # the released code's KNN score: key cosine + 50 * (text cosine * D^-0.5)
CONTROLS = {"rule": Control("filter rule", "choice", choices=RULES),  # the options the explorer shows
            "n_neighbors": Control("LOF neighbours", "int", low=2, high=60, when=("rule", "lof")),
            "iqr_factor": IQR_FACTOR_CONTROL, "text_stage": Control("text stage (recovery)", "switch"),
            "knn_k": KNN_K_CONTROL}


def is_number(value) -> bool:
    """True for a finite real number (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


@dataclass
class RCConfig:
    rule: str = "lof"  # dynamic scale filter: "lof" (released code) or "iqr" (PruMerge's)
    n_neighbors: int = 20  # LOF neighbours for the visual and text stages
    iqr_factor: float = IQR_FACTOR  # IQR rule: outlier above Q3 + iqr_factor * IQR (PruMerge's 1.5)
    centre_neighbors: int = 10  # LOF neighbours for the merge-centre count
    text_stage: bool = True  # False: skip text recovery (and the text term of the KNN similarity)
    knn_k: int = 32  # neighbours each centre absorbs
    text_dim: int = 768  # D, joint-space width of the CLIP behind text_sim (CompressedModel fills in its CLIP's)
    knn_text_weight: float | None = None  # w in cos(key) + w * s; None: 50 * D^-0.5, the released score scale
    count_rounding: str = "exact"  # stage counts floor(n * count / total); "float": int(n * (count / total)) released
    centre_count: str = "remaining"  # "remaining": int(M * ratio); "released": int(C * ratio), C = feature width
    key_indexing: str = "correct"  # "released": keys gathered with R-indices from the full grid (wrong patches)
    centre_order: str = "raster"  # merged centres in original order; "attention": descending [CLS] attention
    extra_token: str = "if_absorbed"  # extra token when a token is left to absorb; "if_centres": when centres exist
    budget_split: tuple[float, float, float] = (0.5, 0.25, 0.25)  # fixed budget: visual, text, centres

    def __post_init__(self):
        choices = {"rule": RULES, "count_rounding": ("exact", "float"), "centre_count": ("remaining", "released"),
                   "key_indexing": ("correct", "released"), "centre_order": ("raster", "attention"),
                   "extra_token": EXTRA_TOKEN_RULES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"rc option {name}={getattr(self, name)!r}: use one of {allowed}")
        for name in ("n_neighbors", "centre_neighbors", "knn_k", "text_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"rc option {name} must be a whole number >= 1, got {value!r}")
            setattr(self, name, int(value))
        if not is_number(self.iqr_factor) or self.iqr_factor < 0:
            raise ValueError(f"rc option iqr_factor must be a finite number >= 0 (PruMerge's 1.5), got "
                             f"{self.iqr_factor!r}")
        if self.knn_text_weight is not None and not is_number(self.knn_text_weight):
            raise ValueError(f"rc option knn_text_weight must be a finite number, or None for 50 / sqrt(text_dim), "
                             f"got {self.knn_text_weight!r}")
        if not isinstance(self.text_stage, (bool, np.bool_)):
            raise ValueError(f"rc option text_stage must be True or False, got {self.text_stage!r}")
        split = self.budget_split.tolist() if isinstance(self.budget_split, np.ndarray) else self.budget_split
        if (isinstance(split, (str, bytes)) or not isinstance(split, Sequence) or len(split) != 3
                or not all(map(is_number, split)) or min(split) < 0 or abs(sum(split) - 1) > 1e-6):
            raise ValueError(f"rc option budget_split must be three numbers >= 0 (the shares of visual, text and "
                             f"centres) summing to 1, got {self.budget_split!r}")

    @property
    def text_weight(self) -> float:
        """w of the KNN similarity cos(key_i, key_j) + w * s_j."""
        if self.knn_text_weight is not None:
            return self.knn_text_weight
        return RELEASED_TEXT_WEIGHT * self.text_dim ** -0.5

    @classmethod
    def preset(cls, name: str | None = None, **options) -> RCConfig:
        """A named set of options; options given alongside override the preset's (an ablation of one switch).

        None or "paper": rclib's defaults. "released": every behaviour of the authors' released code
        (docs/released.md).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown rc preset {name!r}; use one of {[p for p in PRESETS if p]}")
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown rc option(s) {unknown}; rc takes {list(cls.__dataclass_fields__)}")
        return cls(**{**PRESETS[name], **options})


PRESETS: dict[str | None, dict] = {
    None: {},
    "paper": {},
    # the released code's token_recycling_with_text_in_vision_and_clustring, stage by stage
    "released": {"rule": "lof", "n_neighbors": 20, "centre_neighbors": 10, "text_stage": True, "knn_k": 32,
                 "knn_text_weight": None, "count_rounding": "float", "centre_count": "released",
                 "key_indexing": "released", "centre_order": "attention", "extra_token": "if_centres"},
}


def scaled_count(scale: int | torch.Tensor, count: torch.Tensor, total: int | torch.Tensor,
                 rounding: str) -> torch.Tensor:
    """[B] int(scale * count / total), the tokens a stage keeps when ``count`` of ``total`` were outliers.

    "exact": integer arithmetic. "float": the released code's int(scale * (count / total)) in float64,
    one lower for some pairs (554 * (7 / 554) = 6.999...).
    """
    total = max(total, 1) if isinstance(total, int) else total.clamp(min=1)
    if rounding == "exact":
        return scale * count // total
    return (scale * (count.double() / (total if isinstance(total, int) else total.double()))).floor().long()


def stage_counts(budget: int, split: tuple[float, float, float], use_text: bool) -> tuple[int, int, int]:
    """Fixed budget K -> (n_v, n_t, n_c): K - 1 slots shared in ``split`` proportions, extra token last; the shares
    are float32 products rounded half to even (as torch would round them)."""
    slots = budget - 1
    _, frac_t, frac_c = split if use_text else (split[0] + split[1], 0.0, split[2])  # visual takes the rest
    n_t, n_c = round(float32(float32(slots) * float32(frac_t))), round(float32(float32(slots) * float32(frac_c)))
    return max(slots - n_t - n_c, 0), n_t, n_c


def float32(x: float) -> float:
    """``x`` rounded to the nearest float32 (as torch's float32 arithmetic rounds each product)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def released_key_order(keys: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
    """The released code's indexing slip: the r-th remaining token gets the key of grid token r."""
    compact = (remaining.long().cumsum(1) - 1).clamp(min=0)  # [B, N] rank among the remaining tokens
    wrong = keys.gather(1, compact[:, :, None].expand_as(keys))
    return torch.where(remaining[:, :, None], wrong, keys)


def stage_masks(a: torch.Tensor, s: torch.Tensor, counts: tuple | None, cfg: RCConfig, use_text: bool,
                n_channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(visual, text, centres) [B, N] bool: RC's three selections from [CLS] attention a and text scores s [B, N].

    counts: (n_v, n_t, n_c) of a fixed budget (ints), or None: each stage's count from the dynamic scale filter
    (n_channels: the feature width, for the released centre count).
    """
    N = a.shape[1]
    # the dynamic scale filter, without its NaN / inf check (a host sync): compress checked the inputs
    outliers = partial(outlier_count, rule=cfg.rule, iqr_factor=cfg.iqr_factor, check=False)
    n_v, n_t, n_c = counts or (None, None, None)
    # 1. visual filter
    if counts is None:
        n_v = scaled_count(N, outliers(a, n_neighbors=cfg.n_neighbors), N, cfg.count_rounding)
    visual = topk_mask(a, n_v)
    # 2. text information recovery, among the tokens the visual filter left ((N - n_v) * ratio of them at most)
    if counts is None and use_text:
        s_pushed = torch.where(visual, s.min(1, keepdim=True).values, s)
        n_t = scaled_count(N - n_v, outliers(s_pushed, n_neighbors=cfg.n_neighbors), N, cfg.count_rounding)
    elif counts is None:
        n_t = torch.zeros_like(n_v)
    text = topk_mask(s.masked_fill(visual, float("-inf")), n_t)
    # 3. secondary recovery: centres among the rest, each merging its nearest neighbours
    taken = visual | text
    if counts is None:
        rest = ~taken
        n_rest = rest.sum(1)
        centre_outliers = outliers(a, n_neighbors=cfg.centre_neighbors, valid=rest)
        n_c = scaled_count(n_channels if cfg.centre_count == "released" else n_rest, centre_outliers, n_rest,
                           cfg.count_rounding)
        n_c = torch.minimum(n_c, n_rest)  # released int(C * ratio) can ask more than the rest: all of the rest
    centres = topk_mask(a.masked_fill(taken, float("-inf")), n_c)
    return visual, text, centres


def recoverable_compression(tokens: torch.Tensor, cls_attn: torch.Tensor, text_sim: torch.Tensor | None,
                            keys: torch.Tensor | None, budget=None, preset: str | None = None,
                            **options) -> CompressionResult:
    """tokens [B, N, C], cls_attn [B, N], text_sim [B, N], keys [B, N, Ck] -> result with K <= N slots.

    preset: None / "paper" (defaults) or "released"; options (``RCConfig`` fields) override it.
    """
    cfg = RCConfig.preset(preset, **options)
    if keys is None:
        raise ValueError("rc merges by key similarity: pass the last vision layer's keys [B, N, Ck]")
    use_text = cfg.text_stage
    if text_sim is None and use_text:
        raise ValueError("rc needs text_sim [B, N] for its text stage; or pass text_stage=False")
    _, N, C = tokens.shape
    a = cls_attn.float()
    s = text_sim.float() if use_text else torch.zeros_like(a)

    # each stage's count is at most the tokens the stages before left (what topk_mask's valid mask would clamp):
    # a stage picks the top of its scores with the tokens taken set to -inf
    if budget is None:
        # the dynamic scale filter's counts are chosen on the host, as the released code runs sklearn's LOF on the
        # CPU: one read of both score rows (a host sync on a GPU), the stages picked there, their masks sent back
        host = torch.stack([a, s]).to("cpu", copy=True)  # [2, B, N]
        picked = torch.stack(stage_masks(host[0], host[1], None, cfg, use_text, C))  # [3, B, N] visual, text, centres
        chosen = picked.numpy()
        n_selected = (chosen[0] | chosen[1]).sum(1)  # [B]: the sizes, known without another read
        sizes = merge_sizes(n_selected, N - n_selected, chosen[2].sum(1), cfg.extra_token)
        visual, text, centres = picked.to(tokens.device).unbind(0)
    else:  # a fixed budget (an int): the counts and sizes are known on the host
        n_v, n_t, n_c = stage_counts(budget, cfg.budget_split, use_text)
        n_v = min(n_v, N)
        n_t = min(n_t, N - n_v)
        n_c = min(n_c, N - n_v - n_t)
        sizes = merge_sizes(n_v + n_t, N - n_v - n_t, n_c, cfg.extra_token)
        visual, text, centres = stage_masks(a, s, (n_v, n_t, n_c), cfg, use_text, C)
    rest = ~(visual | text)
    rc_keys = released_key_order(keys, rest) if cfg.key_indexing == "released" else keys
    # 4. token merger: kept and recovered in original order, then the centres (each with its neighbours by
    #    cos(key_i, key_j) + w * s_j), then the extra token
    scores = {"visual": cls_attn, "text": text_sim} if use_text else {"visual": cls_attn}
    return merge_into_centres(tokens, a, visual, text, centres, rest, rc_keys, cfg.text_weight * s, cfg.knn_k, "rc",
                              scores, centre_order=a if cfg.centre_order == "attention" else None,
                              extra_token=cfg.extra_token, sizes=sizes)
