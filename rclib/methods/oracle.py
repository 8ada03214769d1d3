"""The oracle: keep the patches of the objects the question is about, within the budget.

Not a method one can deploy: it reads the ground-truth mask of the asked-about objects (``target``, from
a synthetic world such as ShapesWorld). It is the ceiling of any selection at K tokens: no method that
keeps K tokens can keep more of the evidence. Target patches go first (highest [CLS] attention first when
the object is larger than the budget); the rest of the budget goes to the highest [CLS] attention outside
it, so the LLM also gets the context a good selection would keep. Kept tokens stay in original order.
"""
from __future__ import annotations

import torch

from rclib.filters import topk_mask
from rclib.methods.common import budget_tensor, default_budget, keep_and_drop
from rclib.result import CompressionResult


def oracle(tokens: torch.Tensor, cls_attn: torch.Tensor, text_sim=None, keys=None, budget=None, *,
           target: torch.Tensor | None = None) -> CompressionResult:
    """tokens [B, N, C], cls_attn [B, N], target [B, N] bool -> K = budget (default 64/576 of N) tokens."""
    B, N, _ = tokens.shape
    if target is None or target.shape != (B, N) or target.dtype != torch.bool:
        raise ValueError(f"oracle needs target=[B, N] = {(B, N)} bool, the asked-about objects' patches "
                         f"(rclib.bench.target_on_grid makes it from a world's masks)")
    a = cls_attn.float()
    spread = a.amax(1, keepdim=True) - a.amin(1, keepdim=True) + 1  # [B, 1]
    rank = torch.where(target.to(a.device), a + spread, a)  # every target patch above the rest of its row
    keep = topk_mask(rank, budget_tensor(budget or default_budget(N), B, tokens.device))
    return keep_and_drop(tokens, keep, "oracle", {"visual": cls_attn})
