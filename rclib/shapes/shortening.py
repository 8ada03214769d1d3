"""Method-neutral shortened images: random order-preserving subsets and merges of the patches, which the LM trains
on (`random_shortening`) and checkpoints are judged with (`random_subset`): scattered patches, random blobs of
neighbours, or the scene's object patches first (from its own labels). Nothing here reads a score, a question, an
answer or any method's rule."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rclib.shapes.recipe import TrainConfig
from rclib.shapes.world import GRID_SIZE, NUM_PATCHES


def random_shortening(batch: int, generator: torch.Generator, cfg: TrainConfig,
                      foreground: torch.Tensor | None = None) -> torch.Tensor:
    """Mixing weights (B, K, P) of a method-neutral shortened image per conversation: token k of row b is
    weights[b, k] @ patches, rows of zeros past K_b. With probability 1 - shorten_share a row keeps every patch
    (the identity). Otherwise K_b is log-uniform in [shorten_min_tokens, P], the K_b anchors (in raster order) are
    uniformly random patches or, with probability cluster_share, a spatially clustered random set
    (`clustered_anchors`) or, with probability foreground_share, random patches with the scene's object patches
    first (`foreground_first`; foreground [B, P] bool, the patches any object covers, from the scene's own labels;
    None: those views keep scattered patches too), and either the other patches are dropped (a random subset), or, with probability
    merge_share, each of them joins a uniformly random anchor with a probability u_b ~ U(0, 1) (else dropped) and
    each token is the mean of its group, or, with probability weighted_share, a weighted sum of its group: random
    Dirichlet(1) weights times a total mass log-uniform in cfg.merge_mass (the field's merged tokens are sums as
    well as means: an attention-weighted sum of the left-out tokens can weigh almost nothing, a centre plus its
    neighbours nearly two). Nothing here reads a score, a question, an answer or any method's rule."""
    rows = []
    for b in range(batch):
        if torch.rand((), generator=generator) >= cfg.shorten_share:
            rows.append(torch.eye(NUM_PATCHES))
            continue
        low, high = math.log(cfg.shorten_min_tokens), math.log(NUM_PATCHES)
        k = int(math.exp(low + (high - low) * torch.rand((), generator=generator).item()))
        view = torch.rand((), generator=generator)
        if view < cfg.cluster_share:
            anchors = clustered_anchors(k, generator)
        elif view < cfg.cluster_share + cfg.foreground_share and foreground is not None:
            anchors = foreground_first(foreground[b], k, generator)
        else:
            anchors = scattered_anchors(k, generator)
        group = torch.full((NUM_PATCHES,), -1)
        group[anchors] = torch.arange(k)
        merged = bool(torch.rand((), generator=generator) < cfg.merge_share)
        if merged:
            joins = (group < 0) & (torch.rand(NUM_PATCHES, generator=generator) < torch.rand((), generator=generator))
            group[joins] = torch.randint(k, (int(joins.sum()),), generator=generator)
        member = torch.nonzero(group >= 0).flatten()
        weights = torch.zeros(k, NUM_PATCHES)
        weights[group[member], member] = 1
        if merged and torch.rand((), generator=generator) < cfg.weighted_share:
            uniform = torch.rand(k, NUM_PATCHES, generator=generator).clamp(min=1e-12)  # rand can return 0: no inf
            weights = weights * -uniform.log()  # Exp(1) draws: Dirichlet(1) mixes within each group
            low, high = (math.log(m) for m in cfg.merge_mass)
            mass = (low + (high - low) * torch.rand(k, 1, generator=generator)).exp()  # [k, 1] each token's total
        else:
            mass = 1.0
        rows.append(weights / weights.sum(-1, keepdim=True) * mass)
    out = torch.zeros(batch, max(len(w) for w in rows), NUM_PATCHES)
    for b, weights in enumerate(rows):
        out[b, : len(weights)] = weights
    return out


def scattered_anchors(k: int, generator: torch.Generator) -> torch.Tensor:
    """k uniformly random patches (sorted raster indices)."""
    return torch.randperm(NUM_PATCHES, generator=generator)[:k].sort().values


def clustered_anchors(k: int, generator: torch.Generator) -> torch.Tensor:
    """k patches (sorted raster indices) where a smooth random field is highest: a few random blobs of neighbouring
    patches, as the field's selections are clustered (attention and similarity gather on objects), while uniformly
    random patches never show the LM a few whole regions and nothing else. The field is Gaussian noise on a coarse
    grid of 2-8 cells a side, upsampled to the patch grid, plus a little per-patch noise; it reads nothing but the
    generator."""
    cells = int(torch.randint(2, 9, (), generator=generator))
    coarse = torch.randn(1, 1, cells, cells, generator=generator)
    smooth = F.interpolate(coarse, size=(GRID_SIZE, GRID_SIZE), mode="bicubic", align_corners=False)  # [1, 1, G, G]
    field = smooth.flatten() + 0.05 * torch.randn(NUM_PATCHES, generator=generator)  # [P]
    return field.topk(k).indices.sort().values


def foreground_first(foreground: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k patches (sorted raster indices), the scene's object patches (foreground [P] bool) before its background, in a
    random order within each, the two mixed by a random margin: as many views hold objects and almost no background
    as some background, the way attention-based selections and the oracle keep an image. It reads the training
    scene's own patch labels, no score, no question and no method's rule."""
    margin = 0.5 + 1.5 * torch.rand((), generator=generator)  # >= 1: every object patch first; 0.5: mixed
    rank = torch.rand(NUM_PATCHES, generator=generator) + margin * foreground.float()  # [P]
    return rank.topk(k).indices.sort().values


def random_subset(batch: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Weights (B, k, P) keeping k uniformly random patches per row, in raster order."""
    anchors = torch.stack([scattered_anchors(k, generator) for _ in range(batch)])
    return F.one_hot(anchors, NUM_PATCHES).float()

