"""The ShapesWorld benchmark: methods x budgets -> accuracy, evidence recall, tokens, time, by object size.

Each batch of held-out scenes is encoded once; every method and budget then compresses and generates
from the same encoder outputs. Evidence recall is the share of the asked-about object's patches that
reach the LLM in any form (kept, recovered, a centre or merged: any fate but dropped);
``evidence_kept`` counts only the patches that reach it as themselves (kept, recovered or a centre).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from rclib.result import Fate

ADAPTIVE = "adaptive"
ADAPTIVE_METHODS = ("rc", "prumerge", "prumerge+")  # the methods that choose K themselves
DEFAULT_BUDGETS = (ADAPTIVE, "64/576", "128/576", "192/576")  # LLaVA-1.5's usual settings, as shares of N
SIZES = ("small", "large")


@dataclass
class BenchConfig:
    methods: tuple[str, ...] = ("full", "rc", "prumerge", "prumerge+", "fastervlm", "visionzip", "divprune", "random",
                                "pool")
    budgets: tuple[str, ...] = DEFAULT_BUDGETS  # "adaptive", an int K, or a share of N such as "64/576"
    n: int = 200  # held-out questions, one per scene
    seed: int = 1234  # scene stream; the shipped model trained on other seeds (see data/models/README.md)
    batch_size: int = 32  # samples encoded and generated together


def budget_tokens(budget: str, n_tokens: int) -> int | None:
    """'adaptive' -> None; '64/576' -> the same share of n_tokens; '40' -> 40."""
    if budget == ADAPTIVE:
        return None
    if "/" in budget:
        num, den = (float(part) for part in budget.split("/"))
        return max(1, round(n_tokens * num / den))
    return int(budget)


def runs(config: BenchConfig) -> list[tuple[str, str]]:
    """(method, budget) pairs: full once, adaptive only for methods that adapt, fixed budgets for the rest."""
    pairs = [("full", "all")] if "full" in config.methods else []
    for budget in config.budgets:
        pairs += [(m, budget) for m in config.methods
                  if m != "full" and (budget != ADAPTIVE or m in ADAPTIVE_METHODS)]
    return pairs


@dataclass
class Tally:
    """Per-sample outcomes of one (method, budget) run."""

    correct: list[bool] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    kept: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    size: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, answers: list[str], result, samples: list, targets: torch.Tensor) -> None:
        """Score one batch: answers vs the samples' truth, evidence of the targets [B, N] in the result."""
        fate = result.fate.cpu()
        for b, sample in enumerate(samples):
            recall, kept = evidence(fate[b], targets[b])
            self.correct.append(answers[b].strip().lower() == sample.answer)
            self.recall.append(recall)
            self.kept.append(kept)
            self.tokens.append(int(result.n_output[b]))
            self.size.append(sample.size_class)

    def row(self, method: str, budget: str) -> dict:
        size = np.array(self.size)
        row = {"method": method, "budget": budget, "n": len(self.correct),
               "accuracy": float(np.mean(self.correct)), "evidence_recall": float(np.mean(self.recall)),
               "evidence_kept": float(np.mean(self.kept)), "mean_tokens": float(np.mean(self.tokens)),
               "seconds": self.seconds / max(1, len(self.correct))}
        for s in SIZES:
            pick = size == s
            row[f"n_{s}"] = int(pick.sum())
            row[f"accuracy_{s}"] = float(np.mean(np.array(self.correct)[pick])) if pick.any() else float("nan")
            row[f"evidence_recall_{s}"] = float(np.mean(np.array(self.recall)[pick])) if pick.any() else float("nan")
        return row


def target_on_grid(pixel_masks: np.ndarray, grid: tuple[int, int], cover: float) -> torch.Tensor:
    """[B, H, W] bool object masks of square images -> [B, h * w] bool on the model's patch grid.

    A patch belongs to the object when the object covers at least ``cover`` of it (the world's rule),
    so the benchmark works for any model resolution, not only the world's own grid. The image
    processor must show the whole square image (resize, no crop), as CLIP's does for square inputs.
    """
    masks = torch.as_tensor(pixel_masks, dtype=torch.float32)[:, None]  # [B, 1, H, W]
    share = torch.nn.functional.adaptive_avg_pool2d(masks, grid)  # [B, 1, h, w]
    return (share >= cover).flatten(1)


def evidence(fate: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """fate [N], target [N] bool -> (share of target patches reaching the LLM, share reaching it as themselves)."""
    reached = fate[target] != Fate.DROPPED
    as_itself = (fate[target] == Fate.KEPT) | (fate[target] == Fate.RECOVERED) | (fate[target] == Fate.CENTRE)
    return float(reached.float().mean()), float(as_itself.float().mean())


def encoded_batches(model, samples: list, batch_size: int):
    """Yield (samples, encoded, targets [B, N] bool on the model's grid) for ShapesWorld samples in batches."""
    from rclib.shapes.world import WorldConfig  # the world is needed here, not for compression

    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        encoded = model.encode([s.image for s in batch], [s.question for s in batch])
        targets = target_on_grid(np.stack([s.target_pixel_mask for s in batch]), encoded.grid,
                                 WorldConfig().patch_cover)  # [B, N] the asked-about object's patches
        yield batch, encoded, targets


def run_bench(model, config: BenchConfig = BenchConfig(), progress: bool = True) -> list[dict]:
    """Rows of results, one per (method, budget); ``model`` is a loaded :class:`CompressedLlava`."""
    from rclib.shapes.world import sample_vqa

    samples = sample_vqa(config.seed, config.n)
    pairs = runs(config)
    tallies = {pair: Tally() for pair in pairs}
    n_batches = -(-len(samples) // config.batch_size)
    bar = tqdm(total=n_batches * len(pairs), desc="bench", disable=not progress)
    for batch, encoded, targets in encoded_batches(model, samples, config.batch_size):
        for method, budget in pairs:
            start = time.perf_counter()
            run = model.run(encoded, method, budget_tokens(budget, encoded.n_tokens) if budget != "all" else None,
                            max_new_tokens=4)  # inside-LLM methods prune while generating
            answers, result = run.texts, run.result
            tally = tallies[(method, budget)]
            tally.seconds += time.perf_counter() - start
            tally.add(answers, result, batch, targets)
            bar.update()
    bar.close()
    return [tallies[pair].row(*pair) for pair in pairs]
