"""FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024, arXiv 2403.06764).

Inside the LLM: decoder layers 0 .. K-1 see every token; the attention that the last prompt token pays to
each image token in layer K-1 (mean over heads) ranks the image tokens; layers K on see only the best
ones, text untouched, at their original positions. The paper's setting is K = 2 (of LLaVA-1.5's 32 layers)
and a drop ratio R = 50 %.
Token schedule (for the cost model): N image tokens in layers 0 .. K-1, the kept count from layer K on.

Where rclib departs:
- a budget (the kept count from layer K on) or FastV's R (``ratio``, the share dropped); neither given,
  the 64/576 default budget of the fixed-budget methods applies (FastV's own default R = 0.5 is
  ``ratio=0.5``);
- batched, each sample keeping its own count; the pruning is decided once, at prefill, and the decoding
  steps reuse the pruned KV cache of layers K on (FastV's first release ran without a KV cache);
- the layer K-1 attention row is computed apart from the layer's own (SDPA) attention, for the one query;
- K given as the paper's (no ``layer``) is K = 2 of 32 layers, moved to the same relative depth of the LLM
  that runs the plan (:meth:`FastVPruner.for_depth`, as SparseVLM's layers): 2 in LLaVA-1.5, 1 in a
  4-layer LLM, where K = 2 would let half the layers read every token. An explicit ``layer`` is exact.

The mechanism (layer-by-layer prefill, per-layer KV cache) is :mod:`rclib.models.llm_pruning`; this file
is the decision. ``rclib.compress`` refuses inside-LLM methods: run them with ``CompressedModel.answer`` /
``run`` (``method="fastv"``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from rclib.filters import topk_mask
from rclib.methods.common import budget_tensor, default_budget, layer_at_depth
from rclib.methods.pruner import PrunerBase

LAYER = 2  # FastV's K: prune after layer 2 (0-based: before decoder layer 2, from layer 1's attention)
PAPER_DEPTH = 32  # LAYER is for LLaVA-1.5-7B's 32 decoder layers; other depths scale it (for_depth)


@dataclass(frozen=True)
class FastVPruner(PrunerBase):
    """FastV's decision for a batch: the image tokens kept from decoder layer ``layer`` on."""

    layer: int  # K (>= 1)
    count: torch.Tensor  # [B] long, image tokens kept per sample from layer K on
    depth: int | None = None  # the LLM depth ``layer`` is meant for (None: exactly this layer, any depth)

    @property
    def layers(self) -> tuple[int, ...]:
        return (self.layer,)

    def for_depth(self, n_layers: int) -> FastVPruner:
        """The plan for an LLM of ``n_layers`` decoder layers: K given for another ``depth`` moves to the same
        relative depth (within 1..n_layers-1)."""
        if self.depth is None or self.depth == n_layers or n_layers < 2:
            return self
        return replace(self, layer=layer_at_depth(self.layer, self.depth, n_layers), depth=n_layers)

    def queries(self, layer: int, sequence) -> torch.Tensor:
        """The last place of each row: the last prompt token (rows are left-padded)."""
        B, L = sequence.real.shape
        return torch.full((B, 1), L - 1, dtype=torch.long, device=sequence.real.device)

    def keep(self, layer: int, attention: torch.Tensor, sequence) -> torch.Tensor:
        """Text and padding stay (padding is dropped by the caller); of the image places, the ``count`` with
        the most attention from the last token (attention [B, 1, L])."""
        image = sequence.image >= 0
        return ~image | topk_mask(attention[:, 0], self.count, valid=image)


def fastv(tokens: torch.Tensor, cls_attn=None, text_sim=None, keys=None, budget: int | None = None, *,
          layer: int | None = None, ratio: float | None = None) -> FastVPruner:
    """tokens [B, N, C] (the image tokens the LLM reads) -> FastV's plan: keep ``budget`` image tokens (or
    drop the share ``ratio``) from decoder layer ``layer`` on. The LLM applies it. layer None: the paper's
    K = 2 of a 32-layer LLM, moved to the same relative depth of the LLM that runs the plan."""
    B, N, _ = tokens.shape
    depth = PAPER_DEPTH if layer is None else None
    layer = LAYER if layer is None else layer
    if ratio is not None and budget is not None:
        raise ValueError("give fastv a budget (tokens kept after layer K) or a ratio (share dropped), not both")
    if ratio is not None and not 0 <= ratio < 1:
        raise ValueError(f"fastv's ratio is the share of image tokens dropped, in [0, 1); got {ratio}")
    if int(layer) != layer or layer < 1:
        raise ValueError(f"fastv's layer K must be an integer >= 1 (the attention of layer K-1 decides); got {layer}")
    kept = budget if budget is not None else default_budget(N) if ratio is None else max(1, round(N * (1 - ratio)))
    return FastVPruner(layer=int(layer), count=budget_tensor(kept, B, tokens.device).clamp(max=N), depth=depth)
