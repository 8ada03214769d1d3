"""Bounded training stages: a stage's step / time budget and learning-rate schedule (`Stage`), and the run's
timestamped log (`Logger`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch


class Logger:
    """Writes timestamped lines to a log file and stdout."""

    def __init__(self, path: Path):
        self.path = path
        self.start = time.time()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def __call__(self, message: str) -> None:
        line = f"[{(time.time() - self.start) / 60:6.2f} min] {message}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


class Stage:
    """A training stage bounded by `minutes` and `steps`: progress in [0, 1] is the larger share used,
    the learning rate follows linear warmup then cosine decay over that progress."""

    def __init__(self, optimizer: torch.optim.Optimizer, minutes: float, steps: int, warmup_share: float):
        self.optimizer, self.seconds, self.steps, self.warmup = optimizer, 60 * minutes, steps, warmup_share
        self.base = [group["lr"] for group in optimizer.param_groups]
        self.start, self.step = time.time(), 0
        self.skipped = 0  # steps whose loss or gradient was not finite: no update

    @property
    def progress(self) -> float:
        return max(self.step / self.steps, (time.time() - self.start) / max(self.seconds, 1e-9))

    @property
    def done(self) -> bool:
        return self.progress >= 1

    def update(self, loss: torch.Tensor, params) -> None:
        """One step on `loss`: gradients clipped to norm 1, learning rate set from the progress. A loss or gradient
        that is not finite updates nothing (counted in `skipped`): one bad batch never poisons the weights."""
        p = self.progress
        factor = (p + 1e-3) / self.warmup if p < self.warmup else 0.5 * (1 + math.cos(math.pi * (p - self.warmup) / (1 - self.warmup)))
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * min(1.0, factor)
        self.optimizer.zero_grad()
        self.step += 1
        if not torch.isfinite(loss):
            self.skipped += 1
            return
        loss.backward()
        if not torch.isfinite(torch.nn.utils.clip_grad_norm_(params, 1.0)):
            self.skipped += 1
            return
        self.optimizer.step()
