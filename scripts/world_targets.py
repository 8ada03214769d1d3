"""The embedded world against its targets, from a bench's results.json (`rclib bench --out DIR`):

- all tokens: accuracy per family;
- the oracle at 32 / 64 tokens: share of the all-token accuracy per family;
- every method: does accuracy fall as the budget grows (64 -> 128 -> 192 -> all) by more than the 95% intervals
  allow (the later interval's top below the earlier one's bottom)?
- RC's adaptive count as a share of the tokens;
- the spread of `glyph` accuracy across methods at 64 tokens;
- each method's share of full at 64 tokens beside the published share on LLaVA-1.5-7B, and Spearman's rank
  correlation of the two orderings (a measurement, not a target).

    python scripts/world_targets.py out/bench/results.json
"""
import json
import sys

import numpy as np

from rclib.published import SHARE_OF_FULL_AT_64
from rclib.shapes.world import FAMILIES


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rho (average ranks for ties)."""
    def ranks(values):
        order = np.argsort(values, kind="stable")
        ranked = np.empty(len(values))
        ranked[order] = np.arange(len(values))
        for v in set(values):  # ties share their mean rank
            ranked[np.array(values) == v] = ranked[np.array(values) == v].mean()
        return ranked
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def main(path: str) -> None:
    rows = json.load(open(path))
    full = next(r for r in rows if r["method"] == "full")
    total = full["budget"]
    print(f"n = {full['n']} questions; all {total} tokens: " + ", ".join(
        f"{f} {full[f'accuracy_{f}']:.3f}" for f in FAMILIES if f"accuracy_{f}" in full))
    for budget in (32, 64):
        oracle = next((r for r in rows if r["method"] == "oracle" and r["budget"] == budget), None)
        if oracle:
            print(f"oracle at {budget}: " + ", ".join(
                f"{f} {oracle[f'accuracy_{f}'] / full[f'accuracy_{f}']:.1%}" for f in FAMILIES if f"accuracy_{f}" in full))
    falls = []
    for method in dict.fromkeys(r["method"] for r in rows):
        if method == "full":
            continue
        fixed = sorted((r for r in rows if r["method"] == method and r["budget"] != "adaptive"), key=lambda r: r["budget"])
        for f in ["accuracy"] + [f"accuracy_{f}" for f in FAMILIES]:
            chain = [r for r in fixed if f in r] + ([full] if method != "oracle" else [])
            for before, after in zip(chain, chain[1:]):
                if after["ci"][f][1] < before["ci"][f][0]:
                    falls.append(f"{method} {f}: {before[f]:.3f} at {before['budget']} -> {after[f]:.3f} at {after['budget']}")
    print("falls beyond the intervals: " + ("; ".join(falls) if falls else "none"))
    rc = next((r for r in rows if r["method"] == "rc" and r["budget"] == "adaptive"), None)
    if rc:
        print(f"rc adaptive: {rc['mean_tokens']:.1f} tokens = {rc['mean_tokens'] / total:.1%} of {total}")
    at64 = [r for r in rows if r["budget"] == 64 and r["method"] != "oracle" and "accuracy_glyph" in r]
    if at64:
        glyph = sorted((r["accuracy_glyph"], r["method"]) for r in at64)
        print(f"glyph at 64: {glyph[0][1]} {glyph[0][0]:.3f} .. {glyph[-1][1]} {glyph[-1][0]:.3f} "
              f"(spread {glyph[-1][0] - glyph[0][0]:.3f})")
    compared = [r for r in at64 if r["method"] in SHARE_OF_FULL_AT_64 and "share_of_full" in r]
    if compared:
        print("share of full at 64 (world [95% interval] | published on LLaVA-1.5-7B):")
        for r in sorted(compared, key=lambda r: SHARE_OF_FULL_AT_64[r["method"]]):
            low, high = r["ci"]["share_of_full"]
            print(f"  {r['method']:>10}: {r['share_of_full']:.1%} [{low:.1%}, {high:.1%}] | {SHARE_OF_FULL_AT_64[r['method']]:.0f}%")
        rho = spearman([r["share_of_full"] for r in compared], [SHARE_OF_FULL_AT_64[r["method"]] for r in compared])
        print(f"Spearman rank correlation of the two orderings: {rho:.2f} ({len(compared)} methods)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/bench/results.json")
