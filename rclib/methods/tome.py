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

Its metric, by default (``MethodSpec.scores == "feature_layer"``): the keys of the layer whose output it merges,
LLaVA's feature layer, averaged over the heads, as ToMe's attention returns ``k.mean(1)`` to its block;
``scores="shared"`` gives it RC's last-layer keys instead.

Where rclib departs: the matching runs on the feature layer's output (the tokens the LLM reads) instead of
inside the vision layers, so that every output token is exactly the mean of its source patches
(``tokens == weights @ inputs``) and the budget is exact per sample; a merged token's metric is the mean of
its sources' keys (ToMe recomputes keys from the merged token in the next layer); there is no
proportional attention (no later ViT layer reads the sizes); outputs keep the original order of each
group's surviving B token (ToMe concatenates the unmerged A tokens before B).
"""
from __future__ import annotations

import torch

from rclib.methods.common import Entries, assemble, budget_int, true_first
from rclib.result import CompressionResult, Fate, Slot


def group_sizes(owner: torch.Tensor, n: int) -> torch.Tensor:
    """[B, n] float: how many input patches each of the n alive tokens holds; owner [B, N] long, each patch's token."""
    return torch.zeros(owner.shape[0], n, device=owner.device).scatter_add_(
        1, owner, torch.ones(owner.shape, device=owner.device))


def bipartite_round(keys: torch.Tensor, owner: torch.Tensor, survivor: torch.Tensor, r: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One round of bipartite soft matching: (owner, survivor) after the r best A -> B merges of each row.

    keys [B, N, Ck] of the input patches; owner [B, N] long: the alive token (0 .. n-1, in original order) each
    patch belongs to; survivor [B, n] long: the patch each alive token is; r <= n // 2 merges per row. The
    alive tokens alternate into A (0, 2, ...) and B (1, 3, ...); an alive token's metric is the mean of its
    patches' keys.
    """
    B, n = survivor.shape
    summed = torch.zeros(B, n, keys.shape[2], device=keys.device).scatter_add_(
        1, owner[:, :, None].expand_as(keys), keys.float())  # [B, n, Ck]
    unit = torch.nn.functional.normalize(summed / group_sizes(owner, n)[:, :, None], dim=-1)
    best, partner = (unit[:, ::2] @ unit[:, 1::2].transpose(1, 2)).max(2)  # [B, |A|] each A token's best B token
    merges = best.argsort(dim=1, descending=True, stable=True)[:, :r]  # [B, r] the A tokens with the best partners
    merged = torch.zeros(B, n, dtype=torch.bool, device=keys.device).scatter_(1, 2 * merges, True)  # [B, n]
    position = (~merged).long().cumsum(1) - 1  # [B, n] each staying token's place after the round
    into = position.scatter(1, 2 * merges, position.gather(1, 2 * partner.gather(1, merges) + 1))  # merged: partner's
    return into.gather(1, owner), survivor.gather(1, true_first(~merged, n - r)[0])


def tome(tokens: torch.Tensor, cls_attn, text_sim, keys: torch.Tensor, budget=None) -> CompressionResult:
    """tokens [B, N, C], keys [B, N, Ck] -> K = budget (default 64/576 of N) tokens, each the mean of its sources."""
    B, N, _ = tokens.shape
    k = min(budget_int(budget, N), N)
    patches = torch.arange(N, device=tokens.device).expand(B, N)
    owner, survivor = patches, patches  # [B, N] each patch's alive token, [B, n] each alive token's patch
    while (n := survivor.shape[1]) > k:  # the same schedule for every row: no host sync
        owner, survivor = bipartite_round(keys, owner, survivor, min(n - k, n // 2))
    size = group_sizes(owner, k)  # [B, K]
    merged = size > 1  # [B, K] slots that merged patches
    entries = Entries(owner, patches, 1.0 / size.gather(1, owner))
    slot_kinds = torch.where(merged, int(Slot.CENTRE), int(Slot.KEPT))
    fate = torch.full((B, N), int(Fate.MERGED), device=tokens.device).scatter_(
        1, survivor, torch.where(merged, int(Fate.CENTRE), int(Fate.KEPT)))  # a slot's surviving patch: its fate
    return assemble(tokens, entries, torch.arange(k, device=tokens.device).expand(B, k), slot_kinds,
                    torch.full((B,), k, device=tokens.device), fate, "tome", {}, K=k)
