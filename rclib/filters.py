"""The dynamic scale filter: how many tokens a stage keeps, then which.

A filter looks at one score per token and returns a keep-count per row; :func:`topk_mask` then keeps
that many of the highest-scoring tokens. Rules:

- ``"lof"`` (the released code's): the number of Local Outlier Factor outliers among the scores taken
  as one-dimensional points, identical to ``sklearn.neighbors.LocalOutlierFactor(n_neighbors=k,
  contamination="auto").fit_predict`` (outlier when LOF > 1.5). LOF is two-sided; only the count is
  used.
- ``"iqr"`` (PruMerge's): the number of scores above ``Q3 + 1.5 * IQR`` (numpy's linear percentiles).

Both work on a batch ``[B, n]`` with an optional ``valid`` mask, so a row can filter a subset of its
tokens (the remaining tokens of a stage) without leaving the device or looping in Python.

Ties (LOF only). In 1-D the k nearest neighbours of a point are ambiguous only when two candidates lie
at exactly the same distance (``x - d`` and ``x + d``); duplicates of one value are interchangeable.
We break such ties toward the lower score (stable sort). scikit-learn's tree search breaks them its
own way, so on heavily quantised scores (half precision) the counts can differ; the test suite and
``benchmarks/filter_ties.py`` measure how often.
"""
from __future__ import annotations

import torch

LOF_THRESHOLD = 1.5  # sklearn's contamination="auto": outlier when LOF > 1.5
IQR_FACTOR = 1.5  # PruMerge: outlier when score > Q3 + 1.5 * IQR
RULES = ("lof", "iqr")


def check_scores(scores: torch.Tensor, valid: torch.Tensor | None = None, name: str = "scores") -> None:
    """Raise a ValueError naming the problem if ``scores`` is not a finite [B, n] tensor."""
    if scores.dim() != 2:
        raise ValueError(f"{name} must be [B, n] (a batch of score rows), got shape {tuple(scores.shape)}")
    if valid is not None and valid.shape != scores.shape:
        raise ValueError(f"valid mask {tuple(valid.shape)} must match {name} {tuple(scores.shape)}")
    finite = torch.isfinite(scores) if valid is None else torch.isfinite(scores) | ~valid
    if not bool(finite.all()):
        rows = torch.nonzero(~finite.all(1)).flatten().tolist()
        raise ValueError(f"{name} contain NaN or inf in batch rows {rows}; check the model's dtype "
                         "(fp16 overflow?) and the inputs")


def outlier_count(scores: torch.Tensor, rule: str = "lof", n_neighbors: int = 20,
                  valid: torch.Tensor | None = None, iqr_factor: float = IQR_FACTOR) -> torch.Tensor:
    """The number of tokens the dynamic scale filter keeps in each row of ``scores``.

    scores [B, n] (or [n]); valid [B, n] bool, the tokens taking part (default all); iqr_factor: the
    IQR rule's multiplier (PruMerge: 1.5).
    Returns LongTensor [B] (or a 0-d tensor for 1-D input). Rows with fewer than 2 valid tokens keep 0.
    """
    if scores.dim() == 1:
        return outlier_count(scores[None], rule, n_neighbors, None if valid is None else valid[None], iqr_factor)[0]
    check_scores(scores, valid)
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        return torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    if rule == "lof":
        assert n_neighbors >= 1, f"n_neighbors must be >= 1, got {n_neighbors}"
        outliers = lof_outliers(scores, n_neighbors, valid)
    elif rule == "iqr":
        outliers = iqr_outliers(scores, valid, iqr_factor)
    else:
        raise ValueError(f"unknown filter rule {rule!r}; use one of {RULES} or pass a fixed budget")
    return outliers.sum(1)


def lof_outliers(scores: torch.Tensor, n_neighbors: int, valid: torch.Tensor) -> torch.Tensor:
    """[B, n] bool: valid tokens whose Local Outlier Factor exceeds 1.5, as sklearn computes it.

    Works in sorted order: in 1-D the k nearest neighbours of the point at sorted position p lie
    within positions p-k .. p+k, so 2k candidates per point suffice (memory O(B n k), not O(B n^2)).
    """
    B, n = scores.shape
    x = scores.double().masked_fill(~valid, float("inf"))  # invalid tokens sort to the end
    xs = x.sort(dim=1, stable=True).values  # [B, n]
    m = valid.sum(1)  # [B] valid tokens per row
    k = (m - 1).clamp(max=n_neighbors).clamp(min=1)  # [B] sklearn: max(1, min(k, n_samples - 1))
    k_max = max(1, min(n_neighbors, n - 1))

    offsets = torch.cat([torch.arange(-k_max, 0), torch.arange(1, k_max + 1)]).to(scores.device)
    cand_pos = torch.arange(n, device=scores.device)[:, None] + offsets  # [n, 2k] sorted positions
    inside = (cand_pos >= 0) & (cand_pos < n)
    cand_pos = cand_pos.clamp(0, n - 1)
    cand = xs[:, cand_pos]  # [B, n, 2k] candidate neighbour values
    dist = (cand - xs[:, :, None]).abs()
    dist = torch.where(inside & torch.isfinite(cand), dist, torch.full_like(dist, float("inf")))
    dist, order = dist.sort(dim=2, stable=True)  # nearest first; ties toward the lower score
    dist, order = dist[:, :, :k_max], order[:, :, :k_max]  # [B, n, k_max]
    nbr_pos = cand_pos.expand(B, n, -1).gather(2, order)  # [B, n, k_max] sorted positions of neighbours
    is_nbr = torch.arange(k_max, device=scores.device) < k[:, None, None]  # [B, 1, k_max]

    k_distance = dist.gather(2, (k - 1)[:, None, None].expand(B, n, 1)).squeeze(2)  # [B, n]
    nbr_k_distance = k_distance.gather(1, nbr_pos.flatten(1)).view(B, n, k_max)
    reach = torch.where(is_nbr, torch.maximum(nbr_k_distance, dist), torch.zeros_like(dist))
    lrd = 1.0 / (reach.sum(2) / k[:, None] + 1e-10)  # [B, n] local reachability density
    nbr_lrd = lrd.gather(1, nbr_pos.flatten(1)).view(B, n, k_max)
    lof = torch.where(is_nbr, nbr_lrd / lrd[:, :, None], torch.zeros_like(dist)).sum(2) / k[:, None]

    sorted_valid = torch.arange(n, device=scores.device) < m[:, None]  # valid tokens sit first
    return (lof > LOF_THRESHOLD) & sorted_valid & (m[:, None] >= 2)


def iqr_outliers(scores: torch.Tensor, valid: torch.Tensor, factor: float = IQR_FACTOR) -> torch.Tensor:
    """[B, n] bool: valid tokens above Q3 + factor * IQR, percentiles interpolated as numpy's default."""
    x = scores.double()
    q = torch.nanquantile(x.masked_fill(~valid, float("nan")),
                          torch.tensor([0.25, 0.75], dtype=x.dtype, device=x.device), dim=1)  # [2, B]
    upper = q[1] + factor * (q[1] - q[0])  # [B]
    return (x > upper[:, None]) & valid


def topk_mask(scores: torch.Tensor, counts: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B, n] bool: the ``counts[b]`` highest-scoring valid tokens of each row (ties: lower index first).

    scores [B, n]; counts LongTensor [B] (clamped to the number of valid tokens); valid [B, n] bool.
    """
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
