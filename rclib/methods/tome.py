"""ToMe (Bolya et al., "Token Merging: Your ViT but Faster", ICLR 2023, arXiv 2210.09461): bipartite soft
matching until K tokens remain, with size-weighted averages and source tracking.

One round of bipartite soft matching: the tokens alive (in original order) alternate into sets A and B; each
A token finds its most similar B token (cosine of the keys, ToMe's metric); the r A tokens with the most
similar partners merge into them. A merged token is the size-weighted average of what it merged, i.e. the
mean of the patches it tracks as its sources. Rounds of r = min(alive - K, alive // 2) run until K remain.

The RC paper's ToMe row (and its numbers) come from the PruMerge paper's comparison table, which lists ToMe
with the ViT token-reduction methods ATS and EViT applied to LLaVA-1.5's CLIP encoder at PruMerge's token
count (about 32 of 576); neither paper publishes that ToMe code or its merge schedule, and ToMe itself
merges r tokens inside every ViT layer (between attention and MLP) with proportional attention.

Where rclib departs: the matching runs on the feature layer's output (the tokens the LLM reads) instead of
inside the vision layers, so that every output token is exactly the mean of its source patches
(``tokens == weights @ inputs``) and the budget is exact per sample; a merged token's metric is the mean of
its sources' keys (ToMe recomputes keys from the merged token in the next layer); there is no
proportional attention (no later ViT layer reads the sizes); outputs keep the original order of each
group's surviving B token (ToMe concatenates the unmerged A tokens before B).
"""
from __future__ import annotations

import torch

from rclib.methods.common import Entries, assemble, budget_tensor, default_budget
from rclib.result import CompressionResult, Fate, Slot


def bipartite_round(keys: torch.Tensor, alive: torch.Tensor, owner: torch.Tensor, r: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One round of bipartite soft matching: (alive, owner) after the r[b] best A -> B merges of each row.

    keys [B, N, Ck] of the alive tokens (merged: mean of their sources); alive [B, N] bool; owner [B, N] the
    alive token each input patch belongs to; r [B] long merges per row (at most half the alive tokens).
    """
    B, N, _ = keys.shape
    rank = alive.long().cumsum(1) - 1  # [B, N] order among the alive tokens
    side_a, side_b = alive & (rank % 2 == 0), alive & (rank % 2 == 1)
    unit = torch.nn.functional.normalize(keys.float(), dim=-1)
    similarity = (unit @ unit.transpose(1, 2)).masked_fill(~side_b[:, None, :], float("-inf"))  # [B, N(A), N(B)]
    best, partner = similarity.max(2)  # [B, N] each A token's most similar B token
    best = best.masked_fill(~side_a, float("-inf"))
    order = best.argsort(dim=1, descending=True, stable=True)  # A tokens by how similar their partner is
    merges = torch.zeros_like(alive).scatter_(1, order, torch.arange(N, device=keys.device).expand(B, N)
                                              < r[:, None])  # [B, N] the r most similar A tokens
    merges &= side_a
    target = torch.where(merges, partner, torch.arange(N, device=keys.device).expand(B, N))  # [B, N]
    return alive & ~merges, target.gather(1, owner)


def tome(tokens: torch.Tensor, cls_attn, text_sim, keys: torch.Tensor, budget=None) -> CompressionResult:
    """tokens [B, N, C], keys [B, N, Ck] -> K = budget (default 64/576 of N) tokens, each the mean of its sources."""
    B, N, _ = tokens.shape
    k = budget_tensor(budget or default_budget(N), B, tokens.device).clamp(max=N)
    alive = torch.ones(B, N, dtype=torch.bool, device=tokens.device)
    owner = torch.arange(N, device=tokens.device).expand(B, N).contiguous()  # [B, N] input patch -> alive token
    group_keys = keys.float()
    while bool((alive.sum(1) > k).any()):
        n_alive = alive.sum(1)
        alive, owner = bipartite_round(group_keys, alive, owner, torch.minimum(n_alive - k, n_alive // 2))
        size = torch.zeros(B, N, device=tokens.device).scatter_add_(1, owner, torch.ones(B, N, device=tokens.device))
        summed = torch.zeros_like(group_keys).scatter_add_(1, owner[:, :, None].expand_as(group_keys), keys.float())
        group_keys = summed / size.clamp(min=1)[:, :, None]  # [B, N, Ck] mean key of each alive token's sources
    size = torch.zeros(B, N, device=tokens.device).scatter_add_(1, owner, torch.ones(B, N, device=tokens.device))
    slot = alive.long().cumsum(1) - 1  # [B, N] output slot of each alive token, original order
    entries = Entries(slot.gather(1, owner), torch.arange(N, device=tokens.device).expand(B, N),
                      1.0 / size.gather(1, owner))
    merged = alive & (size > 1)
    slot_rows = torch.where(alive, slot, -1)
    slot_kinds = torch.where(merged, int(Slot.CENTRE), int(Slot.KEPT))
    fate = torch.where(merged, int(Fate.CENTRE), torch.where(alive, int(Fate.KEPT), int(Fate.MERGED)))
    return assemble(tokens, entries, slot_rows, slot_kinds, alive.sum(1), fate, "tome", {})
