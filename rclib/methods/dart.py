"""DART (Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models: Duplication Matters More",
EMNLP 2025, arXiv 2502.11494; code github.com/ZichenWen1/DART).

Inside the LLM, once, before decoder layer K (the released setting: K = 2 of LLaVA-1.5-7B's 32 layers):

1. pivots: the image tokens and the text tokens after the image whose keys in layer K-1 have the largest L1
   norm (4 of each by default);
2. each pivot in turn takes the image tokens least similar to it (cosine of the hidden states entering layer
   K, through the LLM's final norm) among those no pivot has taken yet;
3. layers K on see the image pivots and the tokens the pivots took, text untouched, at their original
   positions. No attention weights are read, so every attention kernel (SDPA, FlashAttention) runs as is.

Where rclib departs:
- the budget is the image tokens kept, exactly: the image pivots, then the rest split evenly over all pivots
  (the first ones one more); the released code takes ``max_num_trunction // 8`` per pivot and so keeps
  ``4 + 8 * (M // 8)`` tokens (132 at M = 128). With fewer tokens than image pivots, the budget's best pivots
  alone;
- the pivots take their turns in the order of their places; the released code walks a Python set of
  places (hash order);
- batched, each sample with its own pivots; the released code reads sample 0's positions.

The mechanism is :mod:`rclib.models.llm_pruning` (``source = "states"``); this file is the decision.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rclib.filters import topk_mask
from rclib.methods.common import budget_tensor, centre_rows, default_budget
from rclib.methods.fastv import FastVPruner

LAYER = 2  # prune before decoder layer 2: layer 1's keys choose the pivots (released pruning_loc)
PAPER_DEPTH = 32  # LAYER is for LLaVA-1.5-7B's 32 decoder layers; other depths scale it (for_depth)
PIVOT_IMAGE = 4  # image pivots (released pivot_image_token)
PIVOT_TEXT = 4  # text pivots (released pivot_text_token)


def pivot_shares(budget: torch.Tensor, n_image_pivots: torch.Tensor, n_pivots: torch.Tensor, P: int) -> torch.Tensor:
    """[B, P] image tokens pivot p takes: (budget - image pivots) split evenly over the row's pivots, the first
    ones one more; zero past a row's pivots."""
    rest = (budget - n_image_pivots).clamp(min=0)[:, None]  # [B, 1]
    count = n_pivots.clamp(min=1)[:, None]
    p = torch.arange(P, device=budget.device)[None]
    share = rest // count + (p < rest % count).long()
    return torch.where(p < n_pivots[:, None], share, 0)


@dataclass(frozen=True)
class DARTPruner(FastVPruner):
    """DART's decision for a batch: the image tokens kept from decoder layer ``layer`` on (FastV's one step,
    its ``layer``, ``count`` and ``for_depth``; chosen from states, not attention)."""

    pivot_image: int = PIVOT_IMAGE
    pivot_text: int = PIVOT_TEXT
    source: str = "states"  # reads keys and hidden states, no attention (rclib.models.llm_pruning)

    def keep(self, layer: int, states, sequence) -> torch.Tensor:
        """Text and padding stay; of the image places, the pivots and what they took (states: a
        :class:`rclib.models.llm_pruning.States`)."""
        image = sequence.image >= 0  # [B, L]
        index = torch.arange(image.shape[1], device=image.device)
        after = torch.where(image, index, -1).max(1).values[:, None]  # [B, 1] the last image place
        text = sequence.real & (index[None] > after)  # [B, L] the question and the answer prompt
        norm = states.keys.float().abs().sum((1, 3))  # [B, L] L1 norm of each place's key
        image_pivots = topk_mask(norm, self.count.clamp(max=self.pivot_image), valid=image)
        pivots = image_pivots | topk_mask(norm, torch.full_like(self.count, self.pivot_text), valid=text)
        places, valid = centre_rows(pivots)  # [B, P] the pivots' places in order
        normed = states.normed.float()
        picked = normed.gather(1, places[:, :, None].expand(-1, -1, normed.shape[2]))  # [B, P, H]
        similarity = torch.nn.functional.cosine_similarity(picked[:, :, None], normed[:, None], dim=-1)  # [B, P, L]
        shares = pivot_shares(self.count, image_pivots.sum(1), valid.sum(1), places.shape[1])  # [B, P]
        chosen = image_pivots.clone()
        for p in range(places.shape[1]):  # each pivot takes the least similar tokens left
            taken = topk_mask(-similarity[:, p], shares[:, p], valid=image & ~chosen)
            chosen |= taken
        return ~image | chosen


def dart(tokens: torch.Tensor, cls_attn=None, text_sim=None, keys=None, budget: int | None = None, *,
         layer: int | None = None, pivot_image: int = PIVOT_IMAGE, pivot_text: int = PIVOT_TEXT) -> DARTPruner:
    """tokens [B, N, C] (the image tokens the LLM reads) -> DART's plan: keep ``budget`` image tokens (default
    64/576 of N) from decoder layer ``layer`` on, the ``pivot_image`` + ``pivot_text`` pivots' least duplicated.
    layer None: the released K = 2 of a 32-layer LLM, moved to the same relative depth of the LLM that runs it."""
    B, N, _ = tokens.shape
    depth = PAPER_DEPTH if layer is None else None
    layer = LAYER if layer is None else layer
    if int(layer) != layer or layer < 1:
        raise ValueError(f"dart's layer K must be an integer >= 1 (layer K-1's keys choose the pivots); got {layer}")
    if int(pivot_image) != pivot_image or int(pivot_text) != pivot_text or pivot_image < 1 or pivot_text < 0:
        raise ValueError(f"dart needs pivot_image >= 1 and pivot_text >= 0 whole pivots; got {pivot_image} and "
                         f"{pivot_text}")
    kept = budget_tensor(budget if budget is not None else default_budget(N), B, tokens.device).clamp(max=N)
    return DARTPruner(layer=int(layer), count=kept, pivot_image=int(pivot_image), pivot_text=int(pivot_text),
                      depth=depth)
