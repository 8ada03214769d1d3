"""PyramidDrop (Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual
Redundancy Reduction", CVPR 2025, arXiv 2410.17247; code github.com/Cooperx521/PyramidDrop).

Inside the LLM, in stages: at the end of each stage (the released setting: after layers 8, 16 and 24 of
LLaVA-1.5-7B's 32) the image tokens are ranked by the attention the last instruction token pays them in the
first layer of the next stage (mean over heads), computed from that layer's own q and k projections of its
input, and a share lambda of them goes on (the released ratios 1, 0.5, 0.25, 0.125: lambda = 0.5), text
untouched. Token schedule (for the cost model): :meth:`PDropPruner.schedule`.

Where rclib departs:
- a budget. PyramidDrop has none; rclib reads a budget K as the *equivalent tokens*, the mean over the decoder
  layers of the image tokens each reads (what the prefill pays for), and meets it with the paper's shape:
  stages at evenly spaced layers (l, 2l, 3l), l at most the paper's quarter of the depth, the latest l whose
  pyramid with lambda = 0.5 stays within K, then lambda set (bisection) so that the mean is K. LLaVA-1.5-7B at
  K = 64: layers 1, 2, 3; at K = 288: the paper's 8, 16, 24. A budget below one layer's worth (N / depth)
  cannot be met: the stages then keep 1 token, and the equivalent tokens say what ran. ``ratio`` = lambda
  (with the paper's layers, or ``layers``) runs the released schedule instead, ``int(N * lambda^s)`` tokens;
- the kept tokens keep their original rotary positions (the released code renumbers the pruned sequence);
- batched, each sample with its own ranking; the released code ranks from the prompt lengths it stored.

The mechanism is :mod:`rclib.models.llm_pruning` (``source = "own_attention"``); this file is the decision.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rclib.filters import topk_mask
from rclib.methods.common import budget_tensor, default_budget, layer_at_depth
from rclib.methods.pruner import PrunerBase

LAYERS = (8, 16, 24)  # rank and drop before these decoder layers (released layer_list)
PAPER_DEPTH = 32  # LAYERS are for LLaVA-1.5-7B's 32 decoder layers
RATIO = 0.5  # lambda: the share of image tokens each stage keeps (released image_token_ratio_list 1/.5/.25/.125)


def stage_counts(n_image: int, ratio: float, stages: int, rounding=round) -> tuple[int, ...]:
    """The image tokens kept at each of ``stages`` stages: ``rounding(N * ratio^s)``, each >= 1."""
    return tuple(max(1, int(rounding(n_image * ratio ** s))) for s in range(1, stages + 1))


def schedule(n_image: int, n_layers: int, layers: tuple[int, ...], counts: tuple[int, ...]) -> list[int]:
    """The image tokens each of ``n_layers`` decoder layers reads: N before the first stage, then each stage's."""
    per_layer, visual = [], n_image
    for index in range(n_layers):
        visual = min(visual, counts[layers.index(index)]) if index in layers else visual
        per_layer.append(visual)
    return per_layer


def mean_tokens(n_image: int, n_layers: int, layers: tuple[int, ...], ratio: float) -> float:
    """The equivalent tokens (mean image tokens over the layers) of the pyramid with ``ratio`` at ``layers``."""
    return sum(schedule(n_image, n_layers, layers, stage_counts(n_image, ratio, len(layers)))) / n_layers


def even_layers(step: int, n_layers: int) -> tuple[int, ...]:
    """Stages at layers step, 2 step, 3 step (as the paper's 8, 16, 24), those below ``n_layers``."""
    return tuple(s * step for s in range(1, len(LAYERS) + 1) if s * step < n_layers)


def solve_ratio(n_image: int, n_layers: int, layers: tuple[int, ...], budget: float) -> float:
    """The lambda in [0, 1] whose pyramid at ``layers`` has ``budget`` equivalent tokens (the nearest above if none
    has: the mean only grows with lambda)."""
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if mean_tokens(n_image, n_layers, layers, middle) < budget else (low, middle)
    return high


def budget_plan(n_image: int, n_layers: int, budget: int, layers: tuple[int, ...] | None) -> tuple[tuple[int, ...],
                                                                                                  tuple[int, ...]]:
    """(layers, counts) of the pyramid whose equivalent tokens are ``budget`` (see the module docstring)."""
    if layers is None:
        paper = layer_at_depth(LAYERS[0], PAPER_DEPTH, n_layers)
        fits = [step for step in range(1, paper + 1) if mean_tokens(n_image, n_layers, even_layers(step, n_layers),
                                                                    RATIO) <= budget]
        layers = even_layers(max(fits, default=1), n_layers)
    ratio = solve_ratio(n_image, n_layers, layers, budget)
    return layers, stage_counts(n_image, ratio, len(layers))


@dataclass(frozen=True)
class PDropPruner(PrunerBase):
    """PyramidDrop's decision for a batch: before ``layers``, keep ``counts`` image tokens there.

    Made for one LLM depth by :meth:`for_depth` (the plan :func:`pdrop` returns says how)."""

    n_image: int  # N, the image tokens the LLM reads
    budget: int | None = None  # the equivalent tokens asked (None: the counts come from ``ratio``)
    ratio: float = RATIO  # lambda, when no budget is given
    given_layers: tuple[int, ...] | None = None  # None: the paper's, moved to the depth (or by the budget)
    layers: tuple[int, ...] = ()  # resolved by for_depth
    counts: tuple[int, ...] = ()
    source: str = "own_attention"  # reads the next layer's own attention (rclib.models.llm_pruning)

    def for_depth(self, n_layers: int) -> PDropPruner:
        """The plan resolved for an LLM of ``n_layers`` decoder layers: its stage layers and counts."""
        if self.given_layers is not None and self.given_layers[-1] >= n_layers:  # the LLM refuses them, saying why
            return PDropPruner(self.n_image, self.budget, self.ratio, self.given_layers, self.given_layers,
                               (1,) * len(self.given_layers))
        if self.budget is not None:
            layers, counts = budget_plan(self.n_image, n_layers, self.budget, self.given_layers)
        else:
            layers = self.given_layers or tuple(dict.fromkeys(layer_at_depth(l, PAPER_DEPTH, n_layers) for l in LAYERS))
            counts = stage_counts(self.n_image, self.ratio, len(layers), rounding=int)  # released: int(N * ratio)
        return PDropPruner(self.n_image, self.budget, self.ratio, self.given_layers, layers, counts)

    def schedule(self, n_layers: int) -> list[int]:
        """The image tokens each of ``n_layers`` decoder layers reads under this plan."""
        plan = self.for_depth(n_layers)
        return schedule(self.n_image, n_layers, plan.layers, plan.counts)

    def queries(self, layer: int, sequence) -> torch.Tensor:
        """The last place of each row: the last instruction token (rows are left-padded)."""
        B, L = sequence.real.shape
        return torch.full((B, 1), L - 1, dtype=torch.long, device=sequence.real.device)

    def keep(self, layer: int, attention: torch.Tensor, sequence) -> torch.Tensor:
        """Text and padding stay; of the image places, this stage's count with the most attention from the last
        token in this layer (attention [B, 1, L])."""
        image = sequence.image >= 0
        count = torch.full((len(attention),), self.counts[self.layers.index(layer)], device=attention.device)
        return ~image | topk_mask(attention[:, 0], count, valid=image)


def pdrop(tokens: torch.Tensor, cls_attn=None, text_sim=None, keys=None, budget: int | None = None, *,
          ratio: float | None = None, layers: tuple[int, ...] | None = None) -> PDropPruner:
    """tokens [B, N, C] (the image tokens the LLM reads) -> PyramidDrop's plan: a pyramid of image tokens whose
    mean over the decoder layers is ``budget`` (default 64/576 of N), or the released pyramid of share ``ratio``
    (lambda) per stage; ``layers`` None: evenly spaced stages (the paper's 8, 16, 24 of 32 at most, moved to the
    LLM's depth). The LLM applies it."""
    N = tokens.shape[1]
    if ratio is not None and budget is not None:
        raise ValueError("give pdrop a budget (equivalent tokens) or a ratio (lambda, the share each stage keeps), "
                         "not both")
    if ratio is not None and not 0 < ratio <= 1:
        raise ValueError(f"pdrop's ratio is lambda, the share of image tokens each stage keeps, in (0, 1]; got {ratio}")
    if layers is not None:
        layers = tuple(layers)
        if not layers or any(int(l) != l or l < 1 for l in layers) or list(layers) != sorted(set(layers)):
            raise ValueError(f"pdrop's layers must be strictly ascending integers >= 1; got {layers}")
        layers = tuple(int(l) for l in layers)
    if budget is None and ratio is None:
        budget = default_budget(N)
    if budget is not None:
        budget = int(budget_tensor(budget, 1, tokens.device)[0])
    return PDropPruner(n_image=N, budget=budget, ratio=RATIO if ratio is None else float(ratio), given_layers=layers)
