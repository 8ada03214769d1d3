"""Why can the oracle's 64 tokens lose existence questions the model answers with all 576? Existence accuracy on the
ShapesWorld model by kind of question (a "yes", or a "no" whose absent object is random, popular or adversarial),
with the image read five ways: all tokens; only the asked-about objects' patches (for a "no": the confusable
objects, those sharing the asked colour or shape); those first, then the most [CLS]-attended patches to 64 tokens
(the oracle); those first, then random patches to 64; and the 64 most [CLS]-attended patches alone.

    python scripts/diagnose_existence.py [--model shapes] [--text-encoder DIR] [--n 200] [--seed 1234]
"""
import argparse
from collections import defaultdict

import numpy as np
import torch

import rclib
from rclib.bench import encoded_batches
from rclib.filters import topk_mask
from rclib.methods.common import keep_and_drop
from rclib.methods.oracle import oracle
from rclib.result import Fate
from rclib.shapes.metrics import scored
from rclib.shapes.world import sample_vqa

BUDGET = 64
KINDS = ("yes", "random", "popular", "adversarial")


def views(features: torch.Tensor, targets: torch.Tensor, cls_attn: torch.Tensor,
          generator: torch.Generator) -> dict[str, torch.Tensor]:
    """[B, N] bool keep masks of each way of reading the image; features [B, N, C], targets [B, N] bool, cls_attn
    [B, N]. The oracle's rule (the asked-about patches, then the highest of a score) fills with [CLS] attention or,
    given random scores, with random patches."""
    def then(rest: torch.Tensor) -> torch.Tensor:  # the asked-about patches, then the highest of ``rest``
        return oracle(features, rest, budget=BUDGET, target=targets).fate != int(Fate.DROPPED)

    noise = torch.rand(targets.shape, generator=generator)
    return {"all tokens": torch.ones_like(targets), "asked-about only": targets,
            f"oracle ({BUDGET}: asked-about, then [CLS])": then(cls_attn),
            f"asked-about, then random ({BUDGET})": then(noise),
            f"[CLS] only ({BUDGET})": topk_mask(cls_attn, BUDGET)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="shapes", help="registry name or a shapes-llava folder")
    parser.add_argument("--text-encoder", default=None, help="a folder's shapes-clip (default: the registry's)")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    model = rclib.load(args.model, args.text_encoder)
    samples = sample_vqa(args.seed, args.n, families=("existence",))
    generator = torch.Generator().manual_seed(0)
    answers, asked = defaultdict(list), []
    for _, encoded, targets in encoded_batches(model, samples, 32):
        asked += targets.sum(1).tolist()
        for name, keep in views(encoded.features, targets, encoded.cls_attn.float(), generator).items():
            keep = keep | ~keep.any(1, keepdim=True)  # a "no" without confusable objects reads the whole image in
            # the "asked-about only" view: the LM needs one token at least
            answers[name] += model.generate(encoded, keep_and_drop(encoded.features, keep, "view", {}), 4)
    kinds = [s.negative or "yes" for s in samples]
    negative = np.array([k != "yes" for k in kinds])
    print(f"{args.n} existence questions of stream {args.seed}: " + ", ".join(f"{kinds.count(k)} {k}" for k in KINDS)
          + f"; asked-about patches per question: {np.mean(np.array(asked)[~negative]):.0f} (yes), "
          f"{np.mean(np.array(asked)[negative]):.0f} (no: the confusable objects). Accuracy by kind:")
    print(f"{'view':>40} {'all':>6} " + " ".join(f"{k:>11}" for k in KINDS))
    for name, texts in answers.items():
        correct = np.array(scored(samples, texts), float)
        by_kind = [correct[[k == kind for k in kinds]].mean() for kind in KINDS]
        print(f"{name:>40} {correct.mean():6.3f} " + " ".join(f"{v:11.2f}" for v in by_kind))


if __name__ == "__main__":
    main()
