"""Measures a trained ShapesWorld model through the real path, on held-out scenes.

Everything goes through `rclib.models.load(<folder>)` -> `CompressedModel.encode / compress / generate`
and `rclib.methods`: the text score is the one RC reads (`TransformersTextTower`, post-layernorm on by
default), the [CLS] attention the one every method reads (`encode_vision`).

- `measure`: per-family accuracy with all 576 tokens, [CLS] attention concentration, text-score
  pointing (post-layernorm on and off) and RC's adaptive token count (metrics.json);
- `compare`: methods at a fixed budget, per family, with evidence recall / kept of the targets.

`python -m rclib.shapes.evaluate [--folder data/models] [--n 500] [--seed 1] [--budget 64]` writes both
into the folder's metrics.json (keeping what training wrote there) and prints them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rclib.methods import METHODS
from rclib.result import evidence_kept, evidence_recall
from rclib.shapes.metrics import family_metrics
from rclib.shapes.world import (
    NUM_PATCHES,
    VQASample,
    WorldConfig,
    patch_mask,
    sample_vqa,
)

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "data" / "models"
EVAL_SEED = 1  # held-out world stream; training uses seed 0
COMPARED = tuple(name for name, spec in METHODS.items() if spec.featured)  # the methods the card compares


def load_folder(folder: Path | str):
    """The CompressedModel saved under `folder` (shapes-llava + shapes-clip), on CPU in float32."""
    from rclib.models import load

    folder = Path(folder)
    return load(folder / "shapes-llava", text_encoder=folder / "shapes-clip", device="cpu", dtype=torch.float32)


def targets_on_grid(samples: list[VQASample], cover: float = WorldConfig().patch_cover) -> torch.Tensor:
    """[B, N] bool: each sample's target pixels as patches (as the world's patch masks count them)."""
    return torch.from_numpy(np.stack([patch_mask(s.target_pixel_mask, cover).reshape(-1) for s in samples]))


def named_on_grid(samples: list[VQASample]) -> torch.Tensor:
    """[B, N] bool: the patches of the objects each question names (empty for a negative existence question)."""
    rows = []
    for s in samples:
        row = np.zeros(NUM_PATCHES, dtype=bool)
        for _, mask in s.named:
            row |= patch_mask(mask).reshape(-1)
        rows.append(row)
    return torch.from_numpy(np.stack(rows))


def cls_concentration(cls_attn: torch.Tensor) -> dict[str, float]:
    """Mean share of the [CLS] attention to patches that falls on the top 1% / 10% of patches; [B, N] -> floats."""
    ranked = cls_attn.float().sort(dim=-1, descending=True).values  # [B, N]
    total = ranked.sum(-1)
    top = {"top1": max(1, round(0.01 * cls_attn.shape[1])), "top10": max(1, round(0.1 * cls_attn.shape[1]))}
    return {name: float((ranked[:, :k].sum(-1) / total).mean()) for name, k in top.items()}


def pointing(text_sim: torch.Tensor, named: torch.Tensor) -> torch.Tensor:
    """[B] bool: the top text-scored patch lies on a named object; text_sim [B, N], named [B, N] bool."""
    return named[torch.arange(len(named)), text_sim.argmax(-1)]


def batches(samples: list[VQASample], batch_size: int):
    for start in range(0, len(samples), batch_size):
        yield samples[start : start + batch_size]


@torch.no_grad()
def measure(folder: Path | str = DEFAULT_FOLDER, n: int = 500, seed: int = EVAL_SEED, batch_size: int = 25) -> dict:
    """The card's measures on `n` held-out samples of stream `seed` (families round-robin)."""
    model = load_folder(folder)
    samples = sample_vqa(seed, n)
    answers, rc_counts = [], {"n_output": [], "n_visual": [], "n_text": [], "n_merged": []}
    hits = {True: [], False: []}
    concentration = []
    for batch in batches(samples, batch_size):
        encoded = model.encode([s.image for s in batch], [s.question for s in batch])
        answers += model.generate(encoded, model.compress(encoded, "full"), max_new_tokens=3)
        rc = model.compress(encoded, "rc")
        for name, values in rc_counts.items():
            values.append(getattr(rc, name).float())
        concentration.append(encoded.cls_attn)
        named = named_on_grid(batch)
        has_named = named.any(-1)
        hits[True].append(pointing(encoded.text_sim, named)[has_named])
        plain = model.encode([s.image for s in batch], [s.question for s in batch], post_layernorm=False)
        hits[False].append(pointing(plain.text_sim, named)[has_named])
    chance = named_on_grid(samples).float().sum(-1)
    chance = (chance[chance > 0] / NUM_PATCHES).mean().item()
    rc_counts = {name: torch.cat(values) for name, values in rc_counts.items()}
    share = rc_counts["n_output"] / NUM_PATCHES
    return {
        "eval": {"seed": seed, "samples": n},
        "all_tokens": family_metrics(samples, answers),
        "cls_concentration": cls_concentration(torch.cat(concentration)),
        "pointing": {"post_layernorm": torch.cat(hits[True]).float().mean().item(),
                     "no_post_layernorm": torch.cat(hits[False]).float().mean().item(),
                     "chance": chance},
        "rc_adaptive": {"mean_tokens": rc_counts["n_output"].mean().item(), "share": share.mean().item(),
                        "share_p10_p50_p90": share.quantile(torch.tensor([0.1, 0.5, 0.9])).tolist(),
                        "mean_visual": rc_counts["n_visual"].mean().item(),
                        "mean_text": rc_counts["n_text"].mean().item(),
                        "mean_merged_slots": rc_counts["n_merged"].mean().item()},
    }


@torch.no_grad()
def compare(folder: Path | str = DEFAULT_FOLDER, n: int = 500, seed: int = EVAL_SEED, budget: int = 64,
            methods: tuple[str, ...] = COMPARED, batch_size: int = 25) -> dict[str, dict]:
    """Per method at `budget` tokens ("full": all): family metrics, evidence recall / kept, mean tokens."""
    model = load_folder(folder)
    samples = sample_vqa(seed, n)
    answers = {m: [] for m in methods}
    recall = {m: [] for m in methods}
    kept = {m: [] for m in methods}
    tokens = {m: [] for m in methods}
    for batch in batches(samples, batch_size):
        encoded = model.encode([s.image for s in batch], [s.question for s in batch])
        targets = targets_on_grid(batch)
        for method in methods:
            result = model.compress(encoded, method, None if method == "full" else budget)
            answers[method] += model.generate(encoded, result, max_new_tokens=3)
            recall[method].append(evidence_recall(result.fate, targets))
            kept[method].append(evidence_kept(result.fate, targets))
            tokens[method].append(result.n_output.float())
    rows = {}
    for method in methods:
        row = family_metrics(samples, answers[method])
        row["evidence_recall"] = torch.cat(recall[method]).nanmean().item()
        row["evidence_kept"] = torch.cat(kept[method]).nanmean().item()
        row["mean_tokens"] = torch.cat(tokens[method]).mean().item()
        rows[method] = row
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="holds shapes-llava/, shapes-clip/, metrics.json")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--budget", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    path = args.folder / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics.update(measure(args.folder, args.n, args.seed))
    metrics[f"budget_{args.budget}"] = compare(args.folder, args.n, args.seed, args.budget)
    path.write_text(json.dumps(metrics, indent=2))
    print(json.dumps({k: v for k, v in metrics.items() if k != "config"}, indent=2))


if __name__ == "__main__":
    main()
