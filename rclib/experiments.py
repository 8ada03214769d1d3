"""The teaching experiments of the notebooks: RC variants side by side on ShapesWorld.

An experiment is a list of bench cells (``rclib.bench.Cell``: a method with options, e.g. RC without its
text stage, optionally with its selected tokens shuffled before the LLM reads them), measured by the bench's
own loop on the same held-out questions, so its rows read like ``rclib bench`` rows.
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch

from rclib.bench import Cell, run_cells
from rclib.methods.common import ADAPTIVE
from rclib.result import CompressionResult, Slot


def shuffle_selected(result: CompressionResult, seed: int = 0) -> CompressionResult:
    """The same result with the kept and recovered output tokens of each sample in a random order.

    Only the order the LLM reads changes (tokens, weights and slot kinds move together); the merged
    tokens keep their places.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.arange(result.slot.shape[1]).repeat(len(result), 1)  # [B, K] new slot -> old slot
    for b in range(len(result)):
        selected = torch.nonzero((result.slot[b] == Slot.KEPT) | (result.slot[b] == Slot.RECOVERED)).flatten().cpu()
        order[b, selected] = selected[torch.randperm(len(selected), generator=generator)]
    order = order.to(result.slot.device)
    return replace(result,
                   tokens=result.tokens.gather(1, order[:, :, None].expand_as(result.tokens)),
                   weights=result.weights.gather(1, order[:, :, None].expand_as(result.weights)),
                   slot=result.slot.gather(1, order), mask=result.mask.gather(1, order))


def shuffled(label: str, method: str = "rc", budget: str = ADAPTIVE, seed: int = 0, **options) -> Cell:
    """A bench cell whose selected (kept and recovered) tokens reach the LLM in a random order (see :func:`shuffle_selected`)."""
    return Cell(label, method, budget, options, transform=partial(shuffle_selected, seed=seed))


def run_experiment(model, cells: list[Cell], n: int = 24, seed: int = 1234, families=None) -> list[dict]:
    """One bench row per cell (its label in the "method" column) on ``n`` held-out ShapesWorld questions."""
    from rclib.shapes.world import sample_vqa

    return run_cells(model, sample_vqa(seed, n, families=families), cells)
