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
subset of its tokens (the remaining tokens of a stage) without looping in Python. The IQR rule runs on the
scores' device; the LOF runs on the host in numpy, as the released code runs scikit-learn's there: its few
dozen small array operations would each be a kernel launch on a GPU, and RC reads its scores to the host once
for all three of its filters (:mod:`rclib.methods.rc`).

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

import numpy as np
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
    if rule == "lof":
        statistic = lof_values(scores, n_neighbors, valid)
        threshold = torch.full((scores.shape[0],), LOF_THRESHOLD, dtype=torch.float64, device=scores.device)
        outliers = statistic > LOF_THRESHOLD  # NaN compares False: tokens not taking part are never outliers
    else:
        statistic = scores.double() if valid is None else scores.double().masked_fill(~valid, float("nan"))
        threshold = iqr_fence(statistic, iqr_factor)
        outliers = statistic > threshold[:, None]
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


def on_host(values: torch.Tensor, dtype=None) -> np.ndarray:
    """``values`` as a numpy array (in numpy ``dtype``): free for a CPU tensor, one copy to the host (a host sync on a
    GPU) otherwise."""
    if values.device.type != "cpu":
        values = values.to("cpu")
    if values.dtype == torch.bfloat16:  # numpy has none
        values = values.float()
    array = (values.detach() if values.requires_grad else values).numpy()
    return array if dtype is None else array.astype(dtype)


def neighbour_windows(values: np.ndarray, k: int, fill: float) -> np.ndarray:
    """[B, n, 2k + 1]: each position with its k neighbours on either side, ``fill`` past the ends.

    window[b, p, k + o] = values[b, p + o] (a view of one padded copy of ``values`` [B, n]).
    """
    B, n = values.shape
    padded = np.full((B, n + 2 * k), fill, dtype=values.dtype)
    padded[:, k:k + n] = values
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1, axis=1)


def lof_values(scores: torch.Tensor, n_neighbors: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B, n] float64 on the scores' device: the Local Outlier Factor of each valid token (default all), as sklearn
    computes it; NaN elsewhere.

    It runs on the host in numpy, as the released code runs sklearn's LOF on the CPU: a few dozen small array
    operations that would each be a kernel launch on a GPU. A score row on a GPU is read once (a host sync).

    In 1-D the k nearest neighbours of a point are the j nearest below it and the k - j nearest above
    it in sorted order, for some j. So every quantity is read from a window of the K sorted neighbours
    on either side (memory and time O(B n K), no sort of candidates): the k-distance is the k-th smallest
    distance in the window, the neighbours are those strictly inside it plus, at equal distance, the lower
    ones first: a run of k + 1 window places, the point's own left out. Rows with fewer than 2 valid tokens
    are NaN. Without a valid mask, k is one int for every row.
    """
    n = scores.shape[1]
    x = on_host(scores, np.float64)
    ok = None if valid is None else on_host(valid)
    if n == 0:
        return torch.from_numpy(x).to(scores.device)  # no token: an empty [B, 0]
    with np.errstate(invalid="ignore", divide="ignore"):  # invalid tokens: inf - inf, masked at the end
        lof = lof_on_host(x, n_neighbors, ok)
    return torch.from_numpy(lof).to(scores.device)


def lof_on_host(x: np.ndarray, n_neighbors: int, valid: np.ndarray | None) -> np.ndarray:
    """:func:`lof_values` on a float64 array x [B, n >= 1] with an optional bool mask ``valid`` [B, n]."""
    n = x.shape[1]
    if valid is not None:
        x = np.where(valid, x, np.inf)  # invalid tokens sort last
    order = np.argsort(x, axis=1, kind="stable")  # [B, n]
    xs = np.take_along_axis(x, order, 1)
    m = n if valid is None else valid.sum(1, keepdims=True)  # valid tokens per row: an int, or [B, 1]
    k = max(1, min(n_neighbors, n - 1)) if valid is None else np.clip(m - 1, 1, n_neighbors)
    K = max(1, min(n_neighbors, n - 1))  # window half-width
    k3 = k if valid is None else k[:, :, None]  # [B, 1, 1] to compare with a window
    # dist[b, p, t]: distance to the point t - K places away in sorted order (inf past the ends)
    dist = neighbour_windows(xs, K, np.inf) - xs[..., None]  # [B, n, 2K + 1]
    np.abs(dist, out=dist)
    if valid is None:  # the k-th nearest other point: the j nearest below and the k - j above, for the best j
        below_j = dist[..., K - k:K + 1]  # [B, n, k + 1] the (k - i)-th point below, i = 0 .. k
        k_distance = np.maximum(below_j, dist[..., K:K + k + 1]).min(2, keepdims=True)  # with the i-th above
    else:  # the (k + 1)-th smallest, the point's own 0 among them: [B, n, 1]
        k_distance = np.take_along_axis(np.sort(dist, axis=2), np.broadcast_to(k3, (*dist.shape[:2], 1)), 2)

    # the neighbours: all strictly inside the k-distance, then ties at it, lower side first: the run of
    # window places t - K = -below .. k - below (the point's own, t = K, taken out of the sums after)
    below = np.minimum((dist[..., :K] <= k_distance).sum(2), k - (dist[..., K + 1:] < k_distance).sum(2))
    place = np.arange(2 * K + 1) - (K - below)[..., None]  # [B, n, 2K + 1] 0 .. k inside the run
    in_run = (place >= 0) & (place <= k3)
    k_distance = k_distance[..., 0]
    reach = np.where(in_run, np.maximum(neighbour_windows(k_distance, K, 0.0), dist), 0.0).sum(2) - k_distance
    lrd = 1.0 / (reach / k + 1e-10)  # [B, n] local reachability density
    lof = (np.where(in_run, neighbour_windows(lrd, K, 0.0), 0.0).sum(2) - lrd) / k / lrd  # [B, n] sorted order
    in_order = np.empty_like(lof)
    np.put_along_axis(in_order, order, lof, 1)  # back to token order
    if valid is None:
        return in_order if n >= 2 else np.full_like(in_order, np.nan)
    return np.where(~valid | (m < 2), np.nan, in_order)


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
    ranked = scores if valid is None else scores.masked_fill(~valid, float("-inf"))
    order = ranked.argsort(dim=1, descending=True, stable=True)  # [B, n] the tokens, best first
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if isinstance(counts, int):
        mask = mask.scatter_(1, order[:, :max(counts, 0)], True)
    else:  # the first counts[b] places of the order
        mask = mask.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device) < counts[:, None])
    return mask if valid is None else mask & valid


def descending_rank(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B, n] long: each valid token's rank among the valid tokens of its row, 0 = highest score.

    Ties go to the lower index first; invalid tokens rank after every valid one.
    """
    order = scores.masked_fill(~valid, float("-inf")).argsort(dim=1, descending=True, stable=True)
    return torch.empty_like(order).scatter_(1, order, torch.arange(scores.shape[1], device=scores.device)
                                            .expand_as(order).contiguous())
