"""The ShapesWorld benchmark: methods x budgets -> accuracy per question family, evidence, tokens, time.

One loop (:func:`run_cells`) serves the bench, the notebooks' teaching experiments and the figures: each
batch of held-out scenes is encoded once, then every :class:`Cell` (a method, a budget, options, and an
optional change to the result before the LLM reads it) compresses and generates from the same encoder
outputs. Answers are scored by the world's own rule (``rclib.shapes.metrics.family_metrics``); evidence
of the asked-about objects by ``rclib.result.evidence_recall`` / ``evidence_kept``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from rclib.methods import METHODS, parse_budget
from rclib.methods.common import ADAPTIVE
from rclib.result import CompressionResult, evidence_kept, evidence_recall
from rclib.stats import paired_ratio_interval, wilson_interval

DEFAULT_BUDGETS = (ADAPTIVE, "64", "128", "192")  # LLaVA-1.5's usual settings; "64/576" scales to other grids


@dataclass
class BenchConfig:
    methods: tuple[str, ...] = tuple(METHODS)  # every registered method
    budgets: tuple[str, ...] = DEFAULT_BUDGETS  # "adaptive", a token count, or a share of N such as "64/576"
    families: tuple[str, ...] | None = None  # question families (None: all of the world's)
    n: int = 1000  # held-out questions, one per scene, families round-robin (200 each): 95% intervals of about
    # +-0.03 on an accuracy near 0.9 per family
    seed: int = 1234  # scene stream; the shipped model trained on other seeds (see data/models/README.md)
    batch_size: int = 32  # samples encoded and generated together

    def __post_init__(self):
        for name in ("methods", "budgets", "families"):
            if isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a list or tuple, got the string {getattr(self, name)!r}: pass "
                                 f"({getattr(self, name)!r},)")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
        if self.n < 1 or self.batch_size < 1:
            raise ValueError(f"n and batch_size must be at least 1, got n={self.n}, batch_size={self.batch_size}")
        for name in ("methods", "budgets", "families"):
            values = list(getattr(self, name) or ())
            twice = sorted({str(v) for v in values if values.count(v) > 1})
            if twice:  # each would be a row of the same numbers again
                raise ValueError(f"{name} lists {', '.join(twice)} more than once: give each once")
        if not self.methods or not self.budgets:
            raise ValueError("methods and budgets must each name at least one: see rclib.methods.METHODS and "
                             "'adaptive', a token count like 64 or a share like 64/576")
        for budget in self.budgets:
            parse_budget(budget, 576)  # raises a ValueError that says what a budget looks like
        if self.families is not None:
            from rclib.shapes.world import check_families

            check_families(self.families)
        if not bench_cells(self):  # only 'adaptive' for methods that take a fixed budget
            raise ValueError(f"{', '.join(self.methods)} take a fixed budget, not 'adaptive': add a budget count "
                             "like 64, or a method that adapts (rc, prumerge)")


@dataclass
class Cell:
    """One column of a comparison: a method at a budget with options, as the LLM will read it."""

    label: str  # the row's name in the results ("rc", "rc, no text", ...)
    method: str
    budget: str = ADAPTIVE  # "adaptive", a count or a share (see rclib.methods.parse_budget)
    options: dict = field(default_factory=dict)
    transform: Callable[[CompressionResult], CompressionResult] | None = None  # applied before the LLM reads it
    encode_options: dict = field(default_factory=dict)  # model.encode options (e.g. {"preset": "released"}: the
    # released text score); cells with the same ones share one encoding of each batch, {} the default one


def bench_cells(config: BenchConfig) -> list[Cell]:
    """Cells of a bench: methods without a budget once, adaptive only for methods that adapt, then every budget."""
    cells = [Cell(m, m, ADAPTIVE) for m in config.methods if not METHODS[m].takes_budget]
    for budget in config.budgets:
        cells += [Cell(m, m, budget) for m in config.methods
                  if METHODS[m].takes_budget and (budget != ADAPTIVE or METHODS[m].adaptive)]
    return cells


def target_on_grid(pixel_masks: np.ndarray, grid: tuple[int, int], cover: float) -> torch.Tensor:
    """[B, H, W] bool object masks of square images -> [B, h * w] bool on the model's patch grid.

    A patch belongs to the object when the object covers at least ``cover`` of it (the world's rule),
    so the benchmark works for any model resolution, not only the world's own grid. The image
    processor must show the whole square image (resize, no crop), as CLIP's does for square inputs.
    """
    masks = torch.as_tensor(pixel_masks, dtype=torch.float32)[:, None]  # [B, 1, H, W]
    share = torch.nn.functional.adaptive_avg_pool2d(masks, grid)  # [B, 1, h, w]
    return (share >= cover).flatten(1)


def encoded_batches(model, samples: list, batch_size: int):
    """Yield (samples, encoded, targets [B, N] bool on the model's grid) for ShapesWorld samples in batches."""
    from rclib.shapes.world import WorldConfig  # the world is needed here, not for compression

    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        encoded = model.encode([s.image for s in batch], [s.question for s in batch])
        targets = target_on_grid(np.stack([s.target_pixel_mask for s in batch]), encoded.grid,
                                 WorldConfig().patch_cover)  # [B, N] the asked-about objects' patches
        yield batch, encoded, targets


@dataclass
class Tally:
    """Per-sample outcomes of one cell."""

    answers: list[str] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)  # NaN where a sample has no target patch
    as_itself: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, texts: list[str], result: CompressionResult, targets: torch.Tensor, seconds: float,
            tokens: torch.Tensor) -> None:
        """tokens [B]: each sample's equivalent tokens (``Run.equivalent_tokens``, the one cost in tokens)."""
        fate = result.fate.cpu()
        self.answers += texts
        self.recall += evidence_recall(fate, targets).tolist()
        self.as_itself += evidence_kept(fate, targets).tolist()
        self.tokens += tokens.tolist()
        self.seconds += seconds

    def row(self, cell: Cell, samples: list, n_tokens: int, correct: list[bool]) -> dict:
        """The cell's results: JSON-safe (no NaN: a mean over no sample is left out); ``ci`` holds the 95%
        Wilson interval of every accuracy, [low, high]. correct: each answer scored (``scored``)."""
        from rclib.shapes.metrics import family_metrics

        budget = parse_budget(cell.budget, n_tokens) if METHODS[cell.method].takes_budget else n_tokens
        row = {"method": cell.label, "budget": ADAPTIVE if budget is None else budget, "n": len(self.answers),
               "mean_tokens": float(np.mean(self.tokens)), **family_metrics(samples, self.answers)}
        row["ci"] = {"accuracy": list(wilson_interval(sum(correct), len(correct)))}
        for family in dict.fromkeys(s.family for s in samples):
            picked = [c for s, c in zip(samples, correct) if s.family == family]
            row["ci"][f"accuracy_{family}"] = list(wilson_interval(sum(picked), len(picked)))
        for name, values in (("evidence_recall", self.recall), ("evidence_kept", self.as_itself)):
            finite = [v for v in values if not math.isnan(v)]
            if finite:
                row[name] = float(np.mean(finite))
        row["seconds"] = self.seconds / len(self.answers)
        return row


def run_cells(model, samples: list, cells: list[Cell], batch_size: int = 32, max_new_tokens: int = 4,
              progress: bool = False) -> list[dict]:
    """One row per cell on ``samples`` (ShapesWorld VQASample items); ``model`` is a loaded CompressedModel.

    Every cell compresses and generates from the same encoder outputs (cells with ``encode_options`` from the
    batch encoded once with them), without the NaN / inf scan (``check_values=False``: the model's own encoder made
    them); seconds count compress + generate.
    """
    tallies = [Tally() for _ in cells]
    n_tokens = None
    bar = tqdm(total=-(-len(samples) // batch_size) * len(cells), desc="bench", disable=not progress)
    for batch, encoded, targets in encoded_batches(model, samples, batch_size):
        n_tokens = encoded.n_tokens
        encodings = {(): encoded}  # sorted encode_options items -> the batch encoded with them
        for cell, tally in zip(cells, tallies):
            key = tuple(sorted(cell.encode_options.items()))
            if key not in encodings:
                encodings[key] = model.encode([s.image for s in batch], [s.question for s in batch],
                                              **cell.encode_options)
            budget = parse_budget(cell.budget, n_tokens) if METHODS[cell.method].takes_budget else None
            truth = {"target": targets} if "target" in METHODS[cell.method].needs else {}
            run = model.run(encodings[key], cell.method, budget, max_new_tokens, cell.transform, check_values=False,
                            **cell.options, **truth)
            tally.add(run.texts, run.result, targets, sum(run.seconds.values()), run.equivalent_tokens)
            bar.update()
    bar.close()
    from rclib.shapes.metrics import scored

    correct = [scored(samples, tally.answers) for tally in tallies]  # one scoring per cell, for rows and shares
    rows = [tally.row(cell, samples, n_tokens, c) for cell, tally, c in zip(cells, tallies, correct)]
    add_shares(rows, [cell.method for cell in cells], [np.array(c, float) for c in correct])
    return rows


def add_shares(rows: list[dict], methods: list[str], outcomes: list[np.ndarray]) -> None:
    """Each row's accuracy as a share of the all-token model's (``share_of_full``, when a ``full`` cell ran) and of
    the oracle's at its budget (``share_of_oracle``), with paired-bootstrap 95% intervals in ``ci``: the cells
    answered the same questions. outcomes: per row, 1.0 / 0.0 per question."""
    full = next((o for m, o in zip(methods, outcomes) if m == "full"), None)
    oracle = {r["budget"]: o for r, m, o in zip(rows, methods, outcomes) if m == "oracle"}
    for row, outcome in zip(rows, outcomes):
        for name, reference in (("share_of_full", full), ("share_of_oracle", oracle.get(row["budget"]))):
            if reference is not None and reference.mean() > 0:
                row[name] = float(outcome.mean() / reference.mean())
                row["ci"][name] = list(paired_ratio_interval(outcome, reference))


def run_bench(model, config: BenchConfig = BenchConfig(), progress: bool = True) -> list[dict]:
    """Rows of results, one per (method, budget) cell of ``config``."""
    from rclib.shapes.world import sample_vqa

    samples = sample_vqa(config.seed, config.n, families=config.families)
    return run_cells(model, samples, bench_cells(config), config.batch_size, progress=progress)
