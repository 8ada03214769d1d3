"""How long compression takes per image at LLaVA-1.5's size (N = 576, C = 1024), per method and batch size.

Run: .venv/bin/python benchmarks/compress_speed.py [--device cpu|cuda] [--repeats 5]
Reports the median wall time per call and per image; a report, not a test.
"""
import argparse
import statistics
import time

import torch

import rclib


def inputs(batch: int, device: str, n: int = 576, width: int = 1024):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(batch, n, width, generator=g)
    cls_attn = torch.softmax(torch.randn(batch, n, generator=g) * 3, dim=1)
    text_sim = torch.randn(batch, n, generator=g) * 0.1
    keys = torch.randn(batch, n, width, generator=g)
    return [t.to(device) for t in (tokens, cls_attn, text_sim, keys)]


def median_seconds(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, N=576, C=1024")
    print(f"{'what':<24} {'batch':>5} {'ms/call':>9} {'ms/image':>9}")
    for batch in (1, 8):
        tokens, a, s, keys = inputs(batch, args.device)
        cases = {"outlier_count (lof)": lambda: rclib.outlier_count(a, "lof", 20),
                 "outlier_count (iqr)": lambda: rclib.outlier_count(a, "iqr")}
        cases.update({f"compress {m}": (lambda m=m: rclib.compress(tokens, a, s, keys, method=m))
                      for m in rclib.METHODS})
        for name, fn in cases.items():
            sec = median_seconds(fn, args.repeats, args.device)
            print(f"{name:<24} {batch:>5} {sec * 1e3:9.2f} {sec * 1e3 / batch:9.2f}")


if __name__ == "__main__":
    main()
