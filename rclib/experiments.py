"""The teaching experiments of the notebooks: RC variants side by side on ShapesWorld.

A :class:`Variant` is a method with options (e.g. RC without its text stage) and optionally its
kept tokens shuffled before the LLM reads them. :func:`run_variants` measures each on the same
held-out questions, with the bench's per-sample tally, so its rows read like ``rclib.bench`` rows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch

from rclib.bench import Tally, encoded_batches
from rclib.result import CompressionResult, Slot


@dataclass
class Variant:
    method: str = "rc"
    budget: int | None = None  # None: the method's adaptive (or default) budget
    options: dict = field(default_factory=dict)  # method options, e.g. {"text_stage": False}
    shuffle_kept: bool = False  # permute the kept and recovered tokens before the LLM reads them


def shuffle_kept(result: CompressionResult, seed: int = 0) -> CompressionResult:
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


def run_variants(model, variants: dict[str, Variant], n: int = 24, seed: int = 1234,
                 batch_size: int = 32) -> list[dict]:
    """One bench-style row per variant (its label in the "method" column) on ``n`` ShapesWorld questions."""
    from rclib.shapes.world import sample_vqa

    tallies = {label: Tally() for label in variants}
    for batch, encoded, targets in encoded_batches(model, sample_vqa(seed, n), batch_size):
        for label, variant in variants.items():
            began = time.perf_counter()
            result = model.compress(encoded, variant.method, variant.budget, **variant.options)
            read = shuffle_kept(result, seed) if variant.shuffle_kept else result
            answers = model.generate(encoded, read, max_new_tokens=4)
            tally = tallies[label]
            tally.seconds += time.perf_counter() - began
            tally.add(answers, result, batch, targets)
    return [tallies[label].row(label, "adaptive" if v.budget is None else str(v.budget))
            for label, v in variants.items()]
