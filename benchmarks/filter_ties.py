"""How often rclib's LOF keep-count differs from scikit-learn's when ties make neighbours ambiguous.

Scores are drawn continuous, then rounded to a low-precision dtype (as a half-precision model would
give them) and compared in float64. Run: .venv/bin/python benchmarks/filter_ties.py [--rows 300]
Needs scikit-learn (the test extra). A report, not a test.
"""
import argparse
import warnings

import numpy as np
import torch
from sklearn.neighbors import LocalOutlierFactor

from rclib import outlier_count

DISTRIBUTIONS = {
    "cls-attention (softmax, N=576)": lambda rng: rng.dirichlet(np.full(576, 0.3)),
    "text cosine (N=576)": lambda rng: rng.normal(0.15, 0.05, 576),
    "cls-attention (N=144)": lambda rng: rng.dirichlet(np.full(144, 0.3)),
}


def sklearn_count(x: np.ndarray, k: int) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int((LocalOutlierFactor(n_neighbors=k, contamination="auto").fit_predict(x[:, None]) == -1).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=300)
    args = p.parse_args()
    print(f"{'scores':<32} {'dtype':<9} {'same count':>10} {'mean |diff|':>11} {'max |diff|':>10}")
    for name, draw in DISTRIBUTIONS.items():
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            rng = np.random.default_rng(0)
            diffs = []
            for _ in range(args.rows):
                x = torch.tensor(draw(rng)).to(dtype).double()
                diffs.append(abs(int(outlier_count(x[None], "lof", 20)[0]) - sklearn_count(x.numpy(), 20)))
            diffs = np.array(diffs)
            print(f"{name:<32} {str(dtype).split('.')[1]:<9} {np.mean(diffs == 0):10.1%} {diffs.mean():11.2f} "
                  f"{diffs.max():10d}")


if __name__ == "__main__":
    main()
