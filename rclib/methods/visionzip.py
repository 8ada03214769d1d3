"""VisionZip (Yang et al., 2024): dominant tokens by [CLS] attention plus a few contextual merges.

K_d dominant tokens = topk(a); of the rest, K_c targets at a uniform stride; every other remaining
token joins the target whose key is most similar (cosine) and each contextual token is the average of
its target and the tokens that joined it. The paper's 64-token setting is 54 + 10; a budget K is split
in that proportion. VisionZip sums the [CLS] attention over heads; rclib uses the shared ``cls_attn``.
"""
from __future__ import annotations

import torch

from rclib.filters import topk_mask
from rclib.methods.common import (
    Entries,
    assemble,
    budget_int,
    cosine_matrix,
    slot_positions,
    token_columns,
    uniform_mask,
)
from rclib.result import CompressionResult, Fate

DOMINANT_SHARE = 54 / 64  # VisionZip's 64-token setting: 54 dominant + 10 contextual


def visionzip(tokens: torch.Tensor, cls_attn: torch.Tensor, text_sim, keys: torch.Tensor | None,
              budget=None) -> CompressionResult:
    """tokens [B, N, C], cls_attn [B, N], keys [B, N, Ck] -> K = budget (default 64/576 of N) tokens."""
    B, N, _ = tokens.shape
    k = budget_int(budget, N)
    n_contextual = max(1, round(k * (1 - DOMINANT_SHARE))) if k > 1 else 0  # k * 10/64 is exact in any precision
    dominant = topk_mask(cls_attn, k - n_contextual)
    rest = ~dominant
    targets = uniform_mask(rest, n_contextual)
    (own, _), _ = slot_positions([dominant, targets])  # [B, N] the slot of each dominant and target token
    n_dominant = min(k - n_contextual, N)

    similarity = cosine_matrix(keys).masked_fill(~targets[:, None, :], float("-inf"))  # [B, N, N(target)]
    joins = similarity.argmax(2)  # [B, N] the most similar target of each token
    columns = token_columns(joins)  # [B, N] n at [b, n]
    joins = torch.where(targets, columns, joins)  # a target joins itself
    members = rest & targets.any(1, keepdim=True)  # [B, N] tokens in some contextual group
    group_size = torch.zeros(B, N, device=tokens.device).scatter_add_(1, joins, members.float())
    # a dominant token goes to its own slot unchanged, a member (a target too) to its target's, averaged
    entries = Entries(torch.where(members, own.gather(1, joins), own), columns,
                      torch.where(members, group_size.gather(1, joins).clamp(min=1).reciprocal(), 1.0))
    fate = torch.full_like(own, int(Fate.DROPPED))
    for mask, f in ((members, Fate.MERGED), (dominant, Fate.KEPT), (targets, Fate.CENTRE)):
        fate = fate.masked_fill_(mask, int(f))
    return assemble(tokens, entries, own, fate, None, fate, "visionzip", {"visual": cls_attn},  # fate: slot kind
                    K=n_dominant + min(n_contextual, N - n_dominant))
