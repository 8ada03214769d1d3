"""VisPruner (Zhang et al., "Beyond Text-Visual Attention: Exploiting Visual Cues for Effective Token Pruning in
VLMs", ICCV 2025; code github.com/Theia-4869/VisPruner, read here as released anonymously).

Before the LLM, from the vision encoder alone:

1. important tokens: the half of the budget with the most [CLS] attention;
2. diverse tokens: the rest, in descending [CLS] attention, lose near-duplicates in rounds until the other
   half of the budget is left: each round splits them alternately into A (1st, 3rd, ...) and B (2nd, 4th, ...),
   scores each A token by its largest cosine similarity to a B token (of the feature-layer patch tokens), drops
   the 8 A tokens that score highest and puts the other A tokens (most similar first) before B;
3. the important and diverse tokens go on in original order, nothing merged.

Its scores, as the released code reads them: the feature layer's [CLS] attention (LLaVA's penultimate layer,
the mean over heads), which :meth:`rclib.models.CompressedModel.compress` passes by default
(``scores="shared"``: RC's). A model without [CLS] would need the attention each token receives; rclib's CLIP
towers all have one.

Where rclib departs: ties in the sorts go to the lower index first (torch's unstable argsort in the release);
the cosines are float32 whatever the tokens' dtype, computed once for all rounds instead of in every round (the
same numbers); with no diverse token to choose (``important_share=1``) none is chosen (the release stops on an
empty max).

Cost. The rounds need every candidate's cosine to every other (each round pairs a different half against the
other), so the candidates' Gram matrix is the floor: R^2 C / 2 multiply-adds for R = N - K/2 candidates, about
four times the K N C of applying any K-token selection. The rounds then read it without reordering it: a B
token's row holds its cosine to every A token, so one max over the B rows scores all of A.
"""
from __future__ import annotations

import torch

from rclib.methods.common import budget_int, keep_and_drop
from rclib.result import CompressionResult

IMPORTANT_SHARE = 0.5  # released: int(T * 0.5) important tokens, the rest diverse
STEP = 8  # released: near-duplicates dropped per round
GRAM_LEAF = 256  # rows up to which cosine_gram multiplies a block whole
GRAM_MIN_WIDTH = 128  # narrower rows: one whole product (the blocks' launches cost more than the multiply-adds
# they save: one thread, R = 544, 1.2 against 0.2 ms at C = 32, even at 128, 1.2 against 1.5 ms at 256)


def cosine_gram(unit: torch.Tensor, leaf: int = GRAM_LEAF) -> torch.Tensor:
    """[B, R, R] the dot products of the rows of ``unit`` [B, R, C] with one another. For C >= GRAM_MIN_WIDTH the
    block above the diagonal is multiplied once and mirrored below it, recursively down to ``leaf`` rows: about
    60% of a full product's multiply-adds, with the same numbers on the CPU."""
    R = unit.shape[1]
    if R <= leaf or unit.shape[2] < GRAM_MIN_WIDTH:
        return unit @ unit.transpose(1, 2)
    top, bottom = unit[:, :R // 2], unit[:, R // 2:]  # [B, h, C], [B, R - h, C]
    cross = top @ bottom.transpose(1, 2)  # [B, h, R - h]
    return torch.cat([torch.cat([cosine_gram(top, leaf), cross], 2),
                      torch.cat([cross.transpose(1, 2), cosine_gram(bottom, leaf)], 2)], 1)


def diverse_tokens(similarity: torch.Tensor, count: int, step: int) -> torch.Tensor:
    """Near-duplicate removal over R candidates: similarity [B, R, R] (cosine, symmetric, in the candidates'
    order) -> [B, count] long, the positions (among the R) of the ``count`` >= 1 left, in their final order.

    A round's score of an A token is the largest entry of its column among the B tokens' rows: the B rows are
    gathered (contiguous copies) and reduced at once, for every A token of the round.
    """
    B, R, _ = similarity.shape
    rows = similarity.reshape(B * R, R)  # row b * R + i: candidate i of sample b
    left = torch.arange(B * R, device=similarity.device).view(B, R)  # [B, R'] rows still in, in round order
    while (r := min(step, left.shape[1] - count)) > 0:
        a, b = left[:, ::2], left[:, 1::2]  # [B, ceil(R'/2)], [B, floor(R'/2)]
        nearest_b = rows.index_select(0, b.flatten()).view(B, b.shape[1], R).amax(1)  # [B, R]
        score = nearest_b.take(a)  # [B, |A|] each A token's largest cosine to a B token (row b * R + i: [b, i])
        distinct = score.sort(dim=1, descending=True, stable=True).indices[:, r:]  # the A tokens that stay
        left = torch.cat([a.gather(1, distinct), b], dim=1)
    return left % R


def most_diverse(tokens: torch.Tensor, candidates: torch.Tensor, count: int, step: int) -> torch.Tensor:
    """[B, count] long: the ``count`` of the candidates [B, R] (token indices) the rounds leave, by the cosines of
    their tokens [B, N, C]; all of them when count >= R."""
    if count == 0 or count >= candidates.shape[1]:
        return candidates[:, :count]
    picked = tokens.gather(1, candidates[:, :, None].expand(-1, -1, tokens.shape[2]))  # [B, R, C]
    unit = torch.nn.functional.normalize(picked.float(), dim=-1)  # as released: normalised, then multiplied
    return candidates.gather(1, diverse_tokens(cosine_gram(unit), count, step))


def vispruner(tokens: torch.Tensor, cls_attn: torch.Tensor, text_sim=None, keys=None, budget=None, *,
              important_share: float = IMPORTANT_SHARE, step: int = STEP) -> CompressionResult:
    """tokens [B, N, C], cls_attn [B, N] -> K = budget (default 64/576 of N) tokens: int(K * important_share) by
    [CLS] attention, the rest the most diverse of the others (``step`` near-duplicates dropped per round)."""
    if not 0 <= important_share <= 1 or int(step) != step or step < 1:
        raise ValueError(f"vispruner needs important_share in [0, 1] and a whole step >= 1; got {important_share} "
                         f"and {step}")
    B, N, _ = tokens.shape
    k = min(budget_int(budget, N), N)
    n_important = int(k * important_share)
    order = cls_attn.argsort(dim=1, descending=True, stable=True)  # [B, N]
    diverse = most_diverse(tokens, order[:, n_important:], k - n_important, int(step))  # [B, k - n_important]
    keep = torch.zeros(B, N, dtype=torch.bool, device=tokens.device)
    keep.scatter_(1, torch.cat([order[:, :n_important], diverse], dim=1), True)
    return keep_and_drop(tokens, keep, "vispruner", {"visual": cls_attn}, K=k)
