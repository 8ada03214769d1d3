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
the cosine similarities of the remaining tokens are computed once, not in every round (the same numbers).
"""
from __future__ import annotations

import torch

from rclib.methods.common import budget_tensor, cosine_matrix, default_budget, keep_and_drop
from rclib.result import CompressionResult

IMPORTANT_SHARE = 0.5  # released: int(T * 0.5) important tokens, the rest diverse
STEP = 8  # released: near-duplicates dropped per round


def diverse_tokens(similarity: torch.Tensor, count: int, step: int) -> torch.Tensor:
    """Near-duplicate removal over R candidates: similarity [B, R, R] (cosine, in the candidates' order) ->
    [B, count] long, the positions (among the R) of the ``count`` left, in their final order."""
    B, R, _ = similarity.shape
    flat = similarity.reshape(B, R * R)
    left = torch.arange(R, device=similarity.device).expand(B, R)  # [B, R'] positions still in
    while (r := min(step, left.shape[1] - count)) > 0:
        a, b = left[:, ::2], left[:, 1::2]  # [B, ceil(R'/2)], [B, floor(R'/2)]
        pairs = (a[:, :, None] * R + b[:, None, :]).flatten(1)  # [B, |A| |B|] the A x B block of the matrix
        score = flat.gather(1, pairs).view(B, a.shape[1], b.shape[1]).max(2).values  # [B, |A|]
        distinct = score.argsort(dim=1, descending=True, stable=True)[:, r:]  # the A tokens that stay
        left = torch.cat([a.gather(1, distinct), b], dim=1)
    return left


def vispruner(tokens: torch.Tensor, cls_attn: torch.Tensor, text_sim=None, keys=None, budget=None, *,
              important_share: float = IMPORTANT_SHARE, step: int = STEP) -> CompressionResult:
    """tokens [B, N, C], cls_attn [B, N] -> K = budget (default 64/576 of N) tokens: int(K * important_share) by
    [CLS] attention, the rest the most diverse of the others (``step`` near-duplicates dropped per round)."""
    if not 0 <= important_share <= 1 or int(step) != step or step < 1:
        raise ValueError(f"vispruner needs important_share in [0, 1] and a whole step >= 1; got {important_share} "
                         f"and {step}")
    B, N, _ = tokens.shape
    k = min(int(budget_tensor(budget or default_budget(N), 1, tokens.device)[0]), N)
    n_important = int(k * important_share)
    order = cls_attn.argsort(dim=1, descending=True, stable=True)  # [B, N]
    rest = order[:, n_important:]  # [B, R] candidates for diversity, most attended first
    similarity = cosine_matrix(tokens.gather(1, rest[:, :, None].expand(-1, -1, tokens.shape[2])))  # [B, R, R]
    diverse = rest.gather(1, diverse_tokens(similarity, k - n_important, int(step)))
    keep = torch.zeros(B, N, dtype=torch.bool, device=tokens.device)
    keep.scatter_(1, torch.cat([order[:, :n_important], diverse], dim=1), True)
    return keep_and_drop(tokens, keep, "vispruner", {"visual": cls_attn})
