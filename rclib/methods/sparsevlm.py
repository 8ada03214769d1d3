"""SparseVLM (Zhang et al., "SparseVLM: Visual Token Sparsification for Efficient Vision-Language Model
Inference", ICML 2025, arXiv 2410.04417; code github.com/Gumpest/SparseVLMs).

Inside the LLM, at a few decoder layers (the released code: after layers 2, 6 and 15 of LLaVA-1.5-7B):

1. raters: the text tokens after the image (the question) that attend to the image most, those whose
   attention to the visual tokens is at least the mean of the question's tokens;
2. scores: each visual token's attention from the raters (mean over raters and heads) in that layer;
3. sparsification: the visual tokens with the best scores go on to the next layer, text untouched;
4. token recycling: of the tokens just pruned, the best-scored share (30 %) is clustered by density peaks
   (DPC-KNN, 10 % as many clusters) and each cluster's mean hidden state enters the next layer as a new
   visual token, right after the kept ones; recycled tokens can be pruned or recycled again later.

Where rclib departs:
- raters are chosen at each pruning layer from that layer's own attention (the question's rows, their mean
  attention to the visual tokens against the question's mean); the released code chooses them once, from
  the softmax over text of the input embeddings' dot products (visual x text), averaged over the visual;
- the count kept at each stage comes from the budget through the released code's schedules for
  LLaVA-1.5-7B (576 image tokens): 64 -> (66, 30, 17), 128 -> (303, 110, 36), 192 -> (300, 200, 110),
  as shares of N, linear between them (and from 0, and up to N at N); the paper's rank-based adaptive
  count (lambda * (L_v - rank P)) is not implemented: the released code runs with it off as well;
- the recycled share and the cluster count round up (``ceil``) where the released code takes int(x) + 1
  (equal unless x is an integer); a stage recycles only when it pruned something;
- the density-peak tie-break is the lower place first (the released code adds 1e-6 noise), clusters enter
  in the order of their centres' places, and a recycled token takes its centre's rotary position (rclib
  keeps original positions; the released code renumbers the pruned sequence 0, 1, 2, ...);
- batched, each sample with its own raters; the KV cache of every layer holds what that layer saw.

Token schedule for the cost model: :func:`token_schedule` (visual tokens entering each decoder layer).
The mechanism is :mod:`rclib.models.llm_pruning`; this file is the decision.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from rclib.filters import topk_mask
from rclib.methods.common import budget_tensor, default_budget, layer_at_depth
from rclib.methods.pruner import PrunerBase

LAYERS = (3, 7, 16)  # prune before these decoder layers: the attention of layers 2, 6 and 15 decides (released)
RELEASED_DEPTH = 32  # LAYERS are for LLaVA-1.5-7B's 32 decoder layers; other depths scale them (for_depth)
RELEASED_N = 576  # image tokens of LLaVA-1.5, for which the released schedules are written
RELEASED_COUNTS = {64: (66, 30, 17), 128: (303, 110, 36), 192: (300, 200, 110)}  # budget -> kept per stage
RECYCLE_SHARE = 0.3  # share of a stage's pruned tokens (the best-scored) that recycling clusters
CLUSTER_SHARE = 0.1  # clusters per recycled token


def stage_counts(budget: int, n_tokens: int) -> tuple[int, ...]:
    """The visual tokens kept at each of the three stages for ``budget`` of ``n_tokens``: the released
    schedules as shares of N, linear in budget / N between them, (0, 0, 0) at 0 and all at N; each >= 1."""
    anchors = [(0.0, (0.0,) * 3)] + [(b / RELEASED_N, tuple(c / RELEASED_N for c in counts))
                                     for b, counts in sorted(RELEASED_COUNTS.items())] + [(1.0, (1.0,) * 3)]
    share = min(budget / n_tokens, 1.0)
    (x0, y0), (x1, y1) = next((a, b) for a, b in zip(anchors, anchors[1:]) if a[0] <= share <= b[0])
    t = (share - x0) / (x1 - x0)
    return tuple(max(1, round(n_tokens * (lo + t * (hi - lo)))) for lo, hi in zip(y0, y1))


def recycled_counts(n_pruned, recycle_share: float, cluster_share: float):
    """(tokens recycled, clusters they form) for ``n_pruned`` tokens pruned at a stage: ceil(share * count);
    works on ints and on long tensors alike."""
    if isinstance(n_pruned, torch.Tensor):
        pool = (n_pruned.double() * recycle_share).ceil().long()
        return pool, (pool.double() * cluster_share).ceil().long()
    pool = math.ceil(n_pruned * recycle_share)
    return pool, math.ceil(pool * cluster_share)


def token_schedule(n_tokens: int, n_layers: int, layers: tuple[int, ...], counts: tuple[int, ...],
                   recycle_share: float = RECYCLE_SHARE, cluster_share: float = CLUSTER_SHARE) -> list[int]:
    """The visual tokens (image tokens and recycled ones) entering each of ``n_layers`` decoder layers."""
    schedule, visual = [], n_tokens
    for index in range(n_layers):
        if index in layers:
            kept = min(counts[layers.index(index)], visual)
            visual = kept + recycled_counts(visual - kept, recycle_share, cluster_share)[1]
        schedule.append(visual)
    return schedule


def rater_scores(attention: torch.Tensor, read: torch.Tensor, visual: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The raters among the question's rows and the visual tokens' scores.

    attention [B, Q, L] (head-mean rows of the question's places), read [B, Q] bool (rows that exist), visual
    [B, L] bool. A row rates when its mean attention to the visual places is at least the mean over the rows
    read. Returns raters [B, Q] bool and scores [B, L] float32 (mean attention from the raters; 0 off visual).
    """
    to_visual = (attention * visual[:, None]).sum(2) / visual.sum(1, keepdim=True).clamp(min=1)  # [B, Q]
    threshold = (to_visual * read).sum(1, keepdim=True) / read.sum(1, keepdim=True).clamp(min=1)  # [B, 1]
    raters = read & (to_visual >= threshold)
    scores = (attention * raters[:, :, None]).sum(1) / raters.sum(1, keepdim=True).clamp(min=1)  # [B, L]
    return raters, scores * visual


def density_peak_clusters(x: torch.Tensor, valid: torch.Tensor, count: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-KNN clustering of the valid tokens of x [B, P, C] into ``count`` [B] clusters per row.

    Distances are Euclidean / sqrt(C); density = exp(-mean squared distance to the ``count`` nearest valid
    tokens, itself included); delta = distance to the nearest denser token (ties: the lower index is denser),
    the row's largest distance for the densest; the ``count`` tokens of largest density * delta are centres,
    every valid token joins its nearest centre. Returns centres [B, P] bool and assignment [B, P] long (the
    index of its centre, -1 for invalid tokens).
    """
    B, P, C = x.shape
    pair = valid[:, :, None] & valid[:, None, :]  # [B, P, P]
    distance = torch.cdist(x.float(), x.float()) / C ** 0.5  # [B, P, P]
    nearest = distance.masked_fill(~pair, float("inf")).sort(2).values  # [B, P, P] ascending, itself first
    within = torch.arange(P, device=x.device)[None, None] < count[:, None, None]  # [B, 1, P]
    density = torch.exp(-torch.where(within, nearest, 0).pow(2).sum(2) / count[:, None].clamp(min=1))  # [B, P]
    index = torch.arange(P, device=x.device)
    denser = (density[:, None, :] > density[:, :, None]) | (
        (density[:, None, :] == density[:, :, None]) & (index[None, None, :] < index[None, :, None]))  # [B, i, j]
    farthest = distance.masked_fill(~pair, 0).flatten(1).max(1).values  # [B]
    delta = distance.masked_fill(~(denser & pair), float("inf")).min(2).values  # [B, P]
    delta = torch.where(torch.isinf(delta), farthest[:, None], delta)
    centres = topk_mask(delta * density, count, valid=valid)
    assignment = distance.masked_fill(~centres[:, None, :], float("inf")).argmin(2)  # [B, P] nearest centre
    assignment = torch.where(centres, index, assignment)  # a centre is its own cluster
    return centres, torch.where(valid & centres.any(1, keepdim=True), assignment, -1)


@dataclass(frozen=True)
class SparseVLMPruner(PrunerBase):
    """SparseVLM's decision for a batch: prune before ``layers``, keeping ``counts`` visual tokens there."""

    layers: tuple[int, ...]  # ascending, each >= 1: the attention of layer l - 1 decides what layer l sees
    counts: tuple[int, ...]  # visual tokens (image and recycled) kept at each stage, before recycling adds its own
    recycle_share: float = RECYCLE_SHARE
    cluster_share: float = CLUSTER_SHARE
    depth: int | None = None  # the LLM depth ``layers`` are meant for (None: exactly these layers, any depth)

    def for_depth(self, n_layers: int) -> SparseVLMPruner:
        """The plan for an LLM of ``n_layers`` decoder layers: layers given for another ``depth`` move to the
        same relative depth (within 1..n_layers-1); stages that land on one layer keep the later, smaller count."""
        if self.depth is None or self.depth == n_layers or n_layers < 2:
            return self
        scaled = [layer_at_depth(layer, self.depth, n_layers) for layer in self.layers]
        stages = dict(zip(scaled, self.counts))  # a later stage on the same layer overwrites the earlier
        return replace(self, layers=tuple(stages), counts=tuple(stages.values()), depth=n_layers)

    def queries(self, layer: int, sequence) -> torch.Tensor:
        """The places after each row's last visual place (the question and the answer prompt), -1 padded."""
        B, L = sequence.real.shape
        index = torch.arange(L, device=sequence.real.device)
        after = torch.where(sequence.visual, index, -1).max(1).values  # [B] the last visual place
        if bool((after >= L - 1).any()):
            raise ValueError("sparsevlm rates the image with the text after it: put the question after the image")
        Q = int((L - 1 - after).max())
        rows = torch.arange(L - Q, L, device=index.device).expand(B, Q)  # [B, Q] the rows' tails
        return torch.where(rows > after[:, None], rows, -1)

    def scores(self, layer: int, attention: torch.Tensor, sequence) -> torch.Tensor:
        """[B, L] the raters' attention to each visual place (0 elsewhere)."""
        return rater_scores(attention, self.queries(layer, sequence) >= 0, sequence.visual)[1]

    def keep(self, layer: int, attention: torch.Tensor, sequence) -> torch.Tensor:
        """Text and padding stay (padding is dropped by the caller); of the visual places, this stage's count
        with the best rater scores."""
        count = torch.full((len(attention),), self.counts[self.layers.index(layer)], device=attention.device)
        visual = sequence.visual
        return ~visual | topk_mask(self.scores(layer, attention, sequence), count, valid=visual)

    def recycle(self, layer: int, attention: torch.Tensor, sequence, keep: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token recycling: the best-scored ``recycle_share`` of the pruned visual places, clustered by
        :func:`density_peak_clusters`; returns the clusters' mean weights [B, M, L] over the places and their
        centres' places [B, M] (-1: no cluster), in the order of the centres' places."""
        pruned = sequence.visual & ~keep
        pool_size, n_clusters = recycled_counts(pruned.sum(1), self.recycle_share, self.cluster_share)
        pool = topk_mask(self.scores(layer, attention, sequence), pool_size, valid=pruned)  # [B, L]
        P = int(pool.sum(1).max())
        if P == 0:  # nothing pruned in any row
            return keep.new_zeros(len(keep), 0, keep.shape[1], dtype=torch.float32), pool_size[:, None][:, :0]
        places = pool.long().argsort(dim=1, descending=True, stable=True)[:, :P]  # [B, P] pool places first, in order
        valid = pool.gather(1, places)
        hidden = sequence.hidden.gather(1, places[:, :, None].expand(-1, -1, sequence.hidden.shape[2]))
        centres, assignment = density_peak_clusters(hidden, valid, n_clusters)  # [B, P], [B, P]
        slot = torch.where(centres, centres.long().cumsum(1) - 1, -1)  # [B, P] cluster order = centre order
        M = int(n_clusters.max())
        member = slot.gather(1, assignment.clamp(min=0))[:, None, :] == torch.arange(M, device=slot.device)[None, :, None]
        member = member & valid[:, None, :]  # [B, M, P] cluster m holds pool token p
        weights = member.float() / member.sum(2, keepdim=True).clamp(min=1)  # [B, M, P] the cluster mean
        weights = torch.zeros(*weights.shape[:2], keep.shape[1], device=keep.device).scatter_(
            2, places[:, None, :].expand_as(weights), weights)  # [B, M, L]
        first = centres.long().argsort(dim=1, descending=True, stable=True)[:, :M]  # [B, M] the centres, in order
        origin = torch.where(centres.gather(1, first), places.gather(1, first), -1)
        return weights, origin


def sparsevlm(tokens: torch.Tensor, cls_attn=None, text_sim=None, keys=None, budget: int | None = None, *,
              layers: tuple[int, ...] | None = None, counts: tuple[int, ...] | None = None,
              recycle_share: float = RECYCLE_SHARE, cluster_share: float = CLUSTER_SHARE) -> SparseVLMPruner:
    """tokens [B, N, C] (the image tokens the LLM reads) -> SparseVLM's plan: prune before decoder ``layers``,
    keeping :func:`stage_counts` of ``budget`` (or ``counts``, one per layer) visual tokens at each, recycling
    the best ``recycle_share`` of the pruned into ``cluster_share`` as many merged tokens. The LLM applies it.
    layers None: the released layers (3, 7, 16) of a 32-layer LLM, moved to the same relative depth of the LLM
    that runs the plan (:meth:`SparseVLMPruner.for_depth`)."""
    N = tokens.shape[1]
    depth = RELEASED_DEPTH if layers is None else None
    layers = LAYERS if layers is None else tuple(layers)
    if not layers or any(int(l) != l or l < 1 for l in layers) or list(layers) != sorted(set(layers)):
        raise ValueError(f"sparsevlm's layers must be strictly ascending integers >= 1 (the attention of layer "
                         f"l-1 decides what layer l sees); got {layers}")
    if counts is not None and budget is not None:
        raise ValueError("give sparsevlm a budget or counts (visual tokens kept at each layer), not both")
    if not 0 <= recycle_share <= 1 or not 0 < cluster_share <= 1:
        raise ValueError(f"sparsevlm's recycle_share must lie in [0, 1] (0: no recycling) and cluster_share in "
                         f"(0, 1]; got {recycle_share} and {cluster_share}")
    if counts is None:
        if len(layers) != len(LAYERS):
            raise ValueError(f"a budget sets the counts of {len(LAYERS)} layers; with layers {layers} give counts")
        budget = default_budget(N) if budget is None else int(budget_tensor(budget, 1, tokens.device)[0])
        counts = stage_counts(budget, N)
    counts = tuple(int(c) for c in counts)
    if len(counts) != len(layers) or min(counts) < 1:
        raise ValueError(f"sparsevlm's counts must be one integer >= 1 per layer {layers}; got {counts}")
    return SparseVLMPruner(layers=tuple(int(l) for l in layers), counts=counts, recycle_share=float(recycle_share),
                           cluster_share=float(cluster_share), depth=depth)
