"""Confidence intervals for the accuracies and shares the bench reports (95% by default).

An accuracy is a binomial proportion: its interval is Wilson's score interval, which stays inside [0, 1] and is
sensible at 0 and n successes. A share (one cell's accuracy over another's on the SAME questions, e.g. of the
all-token model) is a ratio of two paired proportions: its interval is a percentile bootstrap that resamples
questions, keeping each question's pair of outcomes together.
"""
from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval of successes / n."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: rounding must not leave p outside
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def paired_ratio_interval(numerator: np.ndarray, denominator: np.ndarray, resamples: int = 2000,
                          level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of mean(numerator) / mean(denominator), resampling the paired questions;
    None when the denominator's mean is 0 in the sample (the ratio is undefined)."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    if numerator.shape != denominator.shape or numerator.ndim != 1 or len(numerator) == 0:
        raise ValueError("pass two outcome vectors of the same questions, one value per question")
    if denominator.mean() == 0:
        return None
    picks = np.random.default_rng(seed).integers(0, len(numerator), (resamples, len(numerator)))  # [R, n]
    top, bottom = numerator[picks].mean(1), denominator[picks].mean(1)
    ratios = top[bottom > 0] / bottom[bottom > 0]
    tail = (1 - level) / 2
    return float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1 - tail))
