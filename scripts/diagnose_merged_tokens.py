"""Why can a merging method lose accuracy as its budget GROWS on the ShapesWorld model? Held-out accuracy of the
methods that emit an extra token (RC, PruMerge, PruMerge+: the [CLS]-attention-weighted sum of the tokens left
over), as they are and with that one slot removed, at each budget, beside the total weight ("mass") of their
merged tokens. A patch has mass 1, a mean of patches too; the extra token's mass is the attention the left-over
tokens hold, which shrinks towards 0 as the budget grows: an input unlike any patch or mean of patches.

    python scripts/diagnose_merged_tokens.py [--model shapes] [--text-encoder DIR] [--family attribute] [--n 200]
"""
import argparse
import dataclasses

import torch

import rclib
from rclib.bench import Cell, encoded_batches, run_cells
from rclib.result import CompressionResult, Slot
from rclib.shapes.world import sample_vqa

METHODS = ("rc", "prumerge", "prumerge+")  # the registry's methods with an extra (weighted-sum) token
BUDGETS = ("32", "64", "128", "192")


def without_extra_token(result: CompressionResult) -> CompressionResult:
    """The result with its extra slot (always the last real one) masked out."""
    mask = result.mask & (result.slot != Slot.EXTRA)
    return dataclasses.replace(result, mask=mask, tokens=result.tokens * mask[..., None],
                               slot=torch.where(mask, result.slot, int(Slot.PAD)))


def slot_mass(model, samples: list, method: str, budget: int) -> dict[str, float]:
    """Mean total weight of the extra token and of the centres (a centre plus what it absorbed)."""
    masses = {Slot.EXTRA: [], Slot.CENTRE: []}
    for _, encoded, _ in encoded_batches(model, samples, 32):
        result = model.run(encoded, method, budget, max_new_tokens=1).result
        mass = result.weights.sum(-1)  # [B, K]
        for kind, values in masses.items():
            values.append(mass[(result.slot == kind) & result.mask])
    return {kind.name.lower(): torch.cat(values).mean().item() if sum(map(len, values)) else float("nan")
            for kind, values in masses.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="shapes", help="registry name or a shapes-llava folder")
    parser.add_argument("--text-encoder", default=None, help="a folder's shapes-clip (default: the registry's)")
    parser.add_argument("--family", default="attribute")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    model = rclib.load(args.model, args.text_encoder)
    samples = sample_vqa(args.seed, args.n, families=(args.family,))
    cells = [cell for method in METHODS for budget in BUDGETS
             for cell in (Cell(f"{method} {budget}", method, budget),
                          Cell(f"{method} {budget} no-extra", method, budget, transform=without_extra_token))]
    rows = {row["method"]: row for row in run_cells(model, samples, cells)}
    print(f"{args.n} {args.family} questions of stream {args.seed}; accuracy [95% interval]")
    print(f"{'method':>10} {'budget':>6} {'as is':>20} {'no extra token':>20} {'extra mass':>10} {'centre mass':>11}")
    for method in METHODS:
        for budget in BUDGETS:
            mass = slot_mass(model, samples, method, int(budget))
            cols = [rows[f"{method} {budget}{tail}"] for tail in ("", " no-extra")]
            text = [f"{r['accuracy']:.3f} [{r['ci']['accuracy'][0]:.2f}, {r['ci']['accuracy'][1]:.2f}]" for r in cols]
            print(f"{method:>10} {budget:>6} {text[0]:>20} {text[1]:>20} {mass['extra']:10.3f} {mass['centre']:11.3f}")


if __name__ == "__main__":
    main()
