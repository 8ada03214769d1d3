"""A budget per crop: each vision-tower crop of an image (the base view, each tile) compressed on its own with an
equal share of the budget, as the peers' released LLaVA-NeXT code does (VisionZip, CDPruner, VisPruner: the same K
per crop). rclib's default spends one budget over the whole image (``budget_scope="image"``).
"""
from __future__ import annotations

from typing import Callable

import torch

from rclib.result import CompressionResult, join_slots, stack_results

BUDGET_SCOPES = ("image", "crop")  # one budget over the image's tokens, or an equal share per crop


def crop_shares(budget: int | None, n_crops: int) -> list[int | None]:
    """An equal share of ``budget`` per crop, the remainder to the first crops (the base view first); None: each
    crop chooses its own count (adaptive methods) or keeps the method's default share of its tokens."""
    if budget is None:
        return [None] * n_crops
    return [budget // n_crops + (c < budget % n_crops) for c in range(n_crops)]


def compress_by_crop(encoded, budget: int | None, compress: Callable[..., CompressionResult]) -> CompressionResult:
    """Each image's crops compressed one by one with :func:`crop_shares` of ``budget``, their output slots one
    after another (base view first); ``compress(encoded, budget)`` compresses a batch of whole images.

    encoded: an :class:`~rclib.models.batch.Encoded` with ``token_crops``.
    """
    results = []
    for b in range(len(encoded)):
        count = int(encoded.token_counts[b]) if encoded.token_counts is not None else encoded.n_tokens
        crops = encoded.token_crops[b, :count]
        if bool((crops < 0).any()):
            raise ValueError(f"image {b}'s tiles were shrunk (anyres_max), so some of its tokens mix several crops: "
                             "budget_scope='crop' needs each token from one crop; use budget_scope='image'")
        n_crops = int(crops.max()) + 1
        one = encoded.subset([b])
        parts = []
        for c, share in enumerate(crop_shares(budget, n_crops)):
            index = torch.nonzero(crops == c).flatten()
            parts.append((index, compress(one.tokens_at(index), share)))
        results.append(join_slots(parts, count))
    return stack_results(results, [[b] for b in range(len(encoded))])
