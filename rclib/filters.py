"""The dynamic scale filter: how many tokens a stage keeps, then which.

A filter looks at one score per token, computes a statistic per token and a threshold per row, and
keeps as many tokens as there are outliers (statistic > threshold); :func:`topk_mask` then keeps that
many of the highest-scoring tokens. Rules:

- ``"lof"`` (the released code's): the statistic is the Local Outlier Factor of each score taken as a
  one-dimensional point, the threshold 1.5; identical to ``sklearn.neighbors.LocalOutlierFactor(
  n_neighbors=k, contamination="auto").fit_predict``. LOF is two-sided; only the count is used.
- ``"iqr"`` (PruMerge's): the statistic is the score itself, the threshold ``Q3 + 1.5 * IQR`` (numpy's
  linear percentiles).

:func:`filter_decision` returns all of it (a :class:`FilterDecision`, for figures); :func:`outlier_count`
only the count. Both work on a batch ``[B, n]`` with an optional ``valid`` mask, so a row can filter a
subset of its tokens (the remaining tokens of a stage) without leaving the device or looping in Python.

Ties (LOF only). In 1-D the k nearest neighbours of a point are ambiguous only when two candidates lie
at exactly the same distance (``x - d`` and ``x + d``); duplicates of one value are interchangeable.
We break such ties toward the lower score. scikit-learn's tree search breaks them its own way, so on
heavily quantised scores (half precision) the counts can differ; the test suite and ``rclib speed``
measure how often.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

LOF_THRESHOLD = 1.5  # sklearn's contamination="auto": outlier when LOF > 1.5
IQR_FACTOR = 1.5  # PruMerge: outlier when score > Q3 + 1.5 * IQR
RULES = ("lof", "iqr")


@dataclass
class FilterDecision:
    """What the dynamic scale filter decided for each row of a [B, n] score batch."""

    rule: str  # "lof" or "iqr"
    statistic: torch.Tensor  # [B, n] float64, token order: LOF ("lof") or the score ("iqr"); NaN if not taking part
    threshold: torch.Tensor  # [B] float64: a token is an outlier when its statistic exceeds this
    outliers: torch.Tensor  # [B, n] bool, token order: statistic > threshold
    count: torch.Tensor  # [B] long: how many tokens the filter keeps (the number of outliers)


def check_scores(scores: torch.Tensor, valid: torch.Tensor | None = None, name: str = "scores") -> None:
    """Raise a ValueError naming the problem if ``scores`` is not a finite [B, n] tensor."""
    if not isinstance(scores, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(scores).__name__}: convert it with torch.as_tensor")
    if scores.is_meta:
        raise ValueError(f"{name} is a meta tensor (a shape without data): pass a tensor that holds values")
    if scores.dtype == torch.bool or scores.is_complex():
        raise ValueError(f"{name} must hold real numbers, got {scores.dtype}")
    if valid is not None and (not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool):
        raise ValueError(f"the valid mask must be a bool tensor like {name}, got "
                         f"{valid.dtype if isinstance(valid, torch.Tensor) else type(valid).__name__}")
    if scores.dim() != 2:
        raise ValueError(f"{name} must be [B, n] (a batch of score rows), got shape {tuple(scores.shape)}")
    if valid is not None and valid.shape != scores.shape:
        raise ValueError(f"valid mask {tuple(valid.shape)} must match {name} {tuple(scores.shape)}")
    if valid is None and scores.numel():
        low, high = torch.aminmax(scores)  # one pass, no [B, n] temporary: NaN and inf reach the extremes
        if bool(torch.isfinite(low) & torch.isfinite(high)):
            return
    finite = torch.isfinite(scores) if valid is None else torch.isfinite(scores) | ~valid
    if not bool(finite.all()):
        rows = torch.nonzero(~finite.all(1)).flatten().tolist()
        raise ValueError(f"{name} contain NaN or inf in batch rows {rows}; check the model's dtype "
                         "(fp16 overflow?) and the inputs")


def check_filter_options(rule: str, n_neighbors: int, iqr_factor: float) -> None:
    """Raise a ValueError naming the option and what it accepts: a known rule, n_neighbors a whole number >= 1,
    iqr_factor a finite number >= 0."""
    if rule not in RULES:
        raise ValueError(f"unknown filter rule {rule!r}; use one of {RULES} or pass a fixed budget")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be at least 1 and a whole number (LOF's neighbours), got {n_neighbors!r}")
    if (isinstance(iqr_factor, bool) or not isinstance(iqr_factor, numbers.Real) or not math.isfinite(iqr_factor)
            or iqr_factor < 0):
        raise ValueError(f"iqr_factor must be a finite number >= 0 (PruMerge's 1.5), got {iqr_factor!r}")


def filter_decision(scores: torch.Tensor, rule: str = "lof", n_neighbors: int = 20,
                    valid: torch.Tensor | None = None, iqr_factor: float = IQR_FACTOR,
                    check: bool = True) -> FilterDecision:
    """The dynamic scale filter on each row of ``scores`` [B, n], with what it computed on the way.

    valid [B, n] bool: the tokens taking part (default all); n_neighbors: LOF's k; iqr_factor: the IQR
    rule's multiplier (PruMerge: 1.5). Rows with fewer than 2 valid tokens keep 0. check: False skips
    :func:`check_scores` (a host sync) for scores already checked.
    """
    check_filter_options(rule, n_neighbors, iqr_factor)
    n_neighbors = int(n_neighbors)
    if check:
        check_scores(scores, valid)
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    B = scores.shape[0]
    if rule == "lof":
        statistic = lof_values(scores, n_neighbors, valid)
        threshold = torch.full((B,), LOF_THRESHOLD, dtype=torch.float64, device=scores.device)
    else:
        statistic = scores.double().masked_fill(~valid, float("nan"))
        threshold = iqr_fence(statistic, iqr_factor)
    outliers = statistic > threshold[:, None]  # NaN compares False: tokens not taking part are never outliers
    return FilterDecision(rule, statistic, threshold, outliers, outliers.sum(1))


def outlier_count(scores: torch.Tensor, rule: str = "lof", n_neighbors: int = 20,
                  valid: torch.Tensor | None = None, iqr_factor: float = IQR_FACTOR, check: bool = True) -> torch.Tensor:
    """The number of tokens the dynamic scale filter keeps in each row of ``scores``.

    scores [B, n] (or [n]); see :func:`filter_decision` for the rest.
    Returns LongTensor [B] (or a 0-d tensor for 1-D input).
    """
    if isinstance(scores, torch.Tensor) and scores.dim() == 1:
        return outlier_count(scores[None], rule, n_neighbors, None if valid is None else valid[None], iqr_factor,
                             check)[0]
    return filter_decision(scores, rule, n_neighbors, valid, iqr_factor, check).count


def neighbour_windows(values: torch.Tensor, k: int, fill: float) -> torch.Tensor:
    """[B, n, 2k + 1]: each position with its k neighbours on either side, ``fill`` past the ends.

    window[b, p, k + o] = values[b, p + o] (a view of one padded copy of ``values`` [B, n]).
    """
    return torch.nn.functional.pad(values, (k, k), value=fill).unfold(1, 2 * k + 1, 1)


def lof_values(scores: torch.Tensor, n_neighbors: int, valid: torch.Tensor) -> torch.Tensor:
    """[B, n] float64: the Local Outlier Factor of each valid token, as sklearn computes it; NaN elsewhere.

    In 1-D the k nearest neighbours of a point are the j nearest below it and the k - j nearest above
    it in sorted order, for some j. So every quantity is read from a window of the K sorted neighbours
    on either side (memory and time O(B n K), no sort of candidates): the k-distance is the narrowest
    window that covers k of them, the neighbours are those strictly inside it plus, at equal distance,
    the lower ones first. Rows with fewer than 2 valid tokens are NaN.
    """
    B, n = scores.shape
    inf = float("inf")
    x = scores.double().masked_fill(~valid, inf)  # invalid tokens sort to the end
    xs, order = x.sort(dim=1, stable=True)  # [B, n]
    m = valid.sum(1)  # [B] valid tokens per row
    k = (m - 1).clamp(min=1, max=n_neighbors)[:, None]  # [B, 1] sklearn: max(1, min(k, n_samples - 1))
    K = max(1, min(n_neighbors, n - 1))  # window half-width
    t = torch.arange(2 * K + 1, device=xs.device)  # window index; t = K is the point itself
    # dist[b, p, t]: distance to the point t - K places away in sorted order (inf past the ends)
    dist = (neighbour_windows(xs, K, inf) - xs[..., None]).abs()  # [B, n, 2K + 1]

    # k-distance: the narrowest window of k neighbours, from index s to s + k for s = K - k .. K
    start = t[:K + 1]
    far_end = dist.gather(2, (start + k).clamp(max=2 * K)[:, None, :].expand(B, n, K + 1))
    radius = torch.maximum(dist[..., :K + 1], far_end).masked_fill((start < K - k)[:, None, :], inf)
    k_distance = radius.min(2).values[..., None]  # [B, n, 1]

    # the neighbours: all strictly inside the k-distance, then ties at it, lower side first
    inside = dist < k_distance
    inside_below, inside_above = inside[..., :K].sum(2), inside[..., K + 1:].sum(2)
    tied_below = (dist[..., :K] == k_distance).sum(2)
    lowest = K - inside_below - torch.minimum(tied_below, k - inside_below - inside_above)  # [B, n] first index taken
    skip = (t < lowest[..., None]) | (t > (lowest + k)[..., None]) | (t == K)  # [B, n, 2K + 1] not a neighbour

    reach = torch.maximum(neighbour_windows(k_distance[..., 0], K, 0.0), dist).masked_fill(skip, 0.0).sum(2)
    lrd = 1.0 / (reach / k + 1e-10)  # [B, n] local reachability density
    lof = neighbour_windows(lrd, K, 0.0).masked_fill(skip, 0.0).sum(2) / k / lrd  # [B, n] sorted order

    taking_part = (torch.arange(n, device=xs.device) < m[:, None]) & (m[:, None] >= 2)  # valid tokens sit first
    lof = torch.where(taking_part, lof, float("nan"))
    return torch.empty_like(lof).scatter_(1, order, lof)  # back to token order


def iqr_fence(statistic: torch.Tensor, factor: float = IQR_FACTOR) -> torch.Tensor:
    """[B] float64: Q3 + factor * IQR of each row of ``statistic`` [B, n] (NaN: not taking part),
    percentiles interpolated as numpy's default."""
    if statistic.numel() == 0:  # no row, or rows of no token: nothing can be an outlier
        return statistic.new_zeros(statistic.shape[0])
    q = torch.nanquantile(statistic, torch.tensor([0.25, 0.75], dtype=statistic.dtype, device=statistic.device),
                          dim=1)  # [2, B]
    return q[1] + factor * (q[1] - q[0])


def topk_mask(scores: torch.Tensor, counts: torch.Tensor | int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B, n] bool: the ``counts[b]`` highest-scoring valid tokens of each row (ties: lower index first).

    scores [B, n]; counts LongTensor [B], or one int for every row (a few launches fewer: the first
    ``counts`` of the sorted order are marked directly); clamped to the number of valid tokens; valid [B, n] bool.
    """
    if isinstance(counts, int):
        ranked = scores if valid is None else scores.masked_fill(~valid, float("-inf"))
        top = ranked.argsort(dim=1, descending=True, stable=True)[:, :max(counts, 0)]  # [B, counts]
        mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True)
        return mask if valid is None else mask & valid
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    return (descending_rank(scores, valid) < counts[:, None]) & valid


def descending_rank(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B, n] long: each valid token's rank among the valid tokens of its row, 0 = highest score.

    Ties go to the lower index first; invalid tokens rank after every valid one.
    """
    order = scores.masked_fill(~valid, float("-inf")).argsort(dim=1, descending=True, stable=True)
    return torch.empty_like(order).scatter_(1, order, torch.arange(scores.shape[1], device=scores.device)
                                            .expand_as(order).contiguous())
