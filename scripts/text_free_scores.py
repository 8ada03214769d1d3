"""How much of the CLIP text score's evidence a text score without a text tower recovers, on ShapesWorld.

The embedded model keeps its CLIP text tower, so its text score (the reference) and each substitute of
``rclib.models.text_free`` score the same patches: the family-neutral check of docs/method.md's "rclib's
extension: a text score without a text tower". Questions of the bench's stream whose answer needs the asked-about
object(s) (not existence, whose "no" asks about an absent object); per question and score:

- the evidence recall of the top-k tokens by the score (``rclib.result.evidence_recall``), and its share of the
  CLIP score's (mean substitute recall / mean CLIP recall, paired bootstrap 95% interval);
- the same top-k recall of a glyph question's digit patches (what its answer reads, :func:`digit_targets`);
- Spearman's rank correlation with the CLIP score over the N tokens;
- RC with ``text_sim`` replaced by the score, at its adaptive count and at 64 tokens: evidence recall and kept,
  the share of the evidence its text stage recovers, the tokens and the accuracy (:data:`RC_CELLS`).

    python scripts/text_free_scores.py                  # 400 questions of stream 1234, about 8 min on 2 cores
    python scripts/text_free_scores.py --n 100 --out /tmp/text-free
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace

import numpy as np
import torch

from rclib.bench import Cell, Tally, encoded_batches, target_on_grid
from rclib.filters import topk_mask
from rclib.methods import compress
from rclib.models import load
from rclib.models.text_free import (ATTENTION_LAYER, attention_score, content_tokens, embedding_score,
                                    layer_attention, question_ids, question_places)
from rclib.outputs import write_report
from rclib.result import Fate, evidence_kept, evidence_recall
from rclib.shapes.metrics import scored
from rclib.shapes.world import sample_vqa
from rclib.stats import paired_ratio_interval

FAMILIES = ("attribute", "glyph", "position", "choice")  # the answer needs the asked-about object(s)
TOP_K = (16, 32, 64)  # of 576
WORLD_TEMPLATE = frozenset("color shape number b c d".split())  # the world's question-template words, option letters
# RC's cells: label -> (the score that replaces text_sim, rc's options). The merge adds w * s to the key cosine with
# w made for a CLIP cosine, so a score's scale moves RC's answers as well as its ranks: the last cell shows how much.
RC_CELLS = {"clip": ("clip", {}), "embedding": ("embedding", {}), "attention": ("attention", {}),
            "no text": ("clip", {"text_stage": False}),
            "clip, no text term in the merge": ("clip", {"knn_text_weight": 0.0})}


def batch_scores(model, encoded, layer: int) -> dict[str, torch.Tensor]:
    """Every score of a batch, [B, N] each: the CLIP reference, the two substitutes as rclib computes them (content
    words; attention at ``layer``), then the variants that defend those choices, and the [CLS] attention."""
    tokenizer = model.processor.tokenizer
    ids, mask = question_ids(tokenizer, encoded.questions)  # [B, T]
    content = content_tokens(tokenizer, ids, mask)
    words = [[tokenizer.decode([int(t)]).strip() for t in row] for row in ids]
    untemplated = content & torch.tensor([[w not in WORLD_TEMPLATE for w in row] for row in words])
    question_embeds = model.model.get_input_embeddings()(ids.to(model.device))  # [B, T, H]
    visual_embeds = model.family.project(model.model, encoded.features)  # [B, N, H] the LLM's input
    embeds, llm_mask = model.llm_inputs(encoded, compress(encoded.features, method="full"))  # all N image tokens
    image = model.image_places(encoded, embeds.shape[1])  # [B, L]
    places = {read: question_places(encoded.input_ids, encoded.attention_mask, ids, mask, chosen)  # LLaVA: the
              for read, chosen in (("content", content), ("every", mask))}  # processor's ids are the LLM's places
    language_model = model.model.model.language_model
    attention = [layer_attention(language_model, embeds, llm_mask, at) for at in range(len(language_model.layers))]
    scores = {"clip": encoded.text_sim.float(),
              "embedding": embedding_score(question_embeds, content, visual_embeds),
              "attention": attention_score(attention[layer], places["content"], image, encoded.n_tokens),
              "embedding, every question token": embedding_score(question_embeds, mask, visual_embeds),
              "embedding, content words less the world's template words":
                  embedding_score(question_embeds, untemplated, visual_embeds),
              f"attention, layer {layer}, every question token":
                  attention_score(attention[layer], places["every"], image, encoded.n_tokens)}
    for at, weights in enumerate(attention):
        if at != layer:
            scores[f"attention, layer {at}"] = attention_score(weights, places["content"], image, encoded.n_tokens)
    scores["[CLS] attention (no text)"] = encoded.cls_attn.float()
    return {name: score.cpu() for name, score in scores.items()}


def topk_recall(score: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """[B] the evidence recall of the k tokens with the highest ``score`` [B, N] (the rest dropped)."""
    fate = torch.where(topk_mask(score, k), int(Fate.KEPT), int(Fate.DROPPED))
    return evidence_recall(fate, target)


def rank_correlation(score: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """Spearman's rho of each row of ``score`` [B, N] with the same row of ``reference``."""
    from scipy.stats import spearmanr

    return [float(spearmanr(s, r).statistic) for s, r in zip(score.numpy(), reference.numpy())]


def digit_targets(samples: list, grid: tuple[int, int]) -> torch.Tensor:
    """[B, N] bool: the patches holding any ink of the digit a glyph question asks about (what its answer reads);
    none for the other families."""
    masks = [next(o.glyph_mask for o in s.scene.objects if o.pixel_mask is s.named[0][1]) if s.family == "glyph"
             else np.zeros_like(s.target_pixel_mask) for s in samples]
    return target_on_grid(np.stack(masks), grid, cover=1e-9)


def rc_cells(model, encoded, regions: dict[str, torch.Tensor], scores: dict[str, torch.Tensor], tallies: dict,
             extra: dict) -> None:
    """RC at its adaptive count and at 64 for each of :data:`RC_CELLS`: each cell's answers, evidence of the
    objects and tokens into ``tallies``; the share of the objects' patches its text stage recovered and of the
    digit's patches it kept as themselves into ``extra``."""
    for label, (name, options) in RC_CELLS.items():
        swapped = replace(encoded, text_sim=scores[name].to(model.device))
        for budget in (None, 64):
            run = model.run(swapped, "rc", budget, max_new_tokens=4, **options)
            tallies[label, budget].add(run.texts, run.result, regions["object"], sum(run.seconds.values()),
                                       run.equivalent_tokens)
            fate = run.result.fate.cpu()
            recovered = ((fate == Fate.RECOVERED) & regions["object"]).sum(1) / regions["object"].sum(1)
            extra[label, budget]["recovered"] += recovered.tolist()
            extra[label, budget]["digit_kept"] += evidence_kept(fate, regions["digit"]).tolist()


def share_row(values: np.ndarray, reference: np.ndarray) -> dict:
    """Mean of ``values`` over the questions with a target, and its share of ``reference``'s with a 95% interval."""
    keep = ~np.isnan(values)
    interval = paired_ratio_interval(values[keep], reference[keep])
    return {"recall": float(values[keep].mean()), "share_of_clip": float(values[keep].mean() / reference[keep].mean()),
            "share_ci": list(interval) if interval else None}


def measure(n: int, seed: int, layer: int, batch_size: int) -> dict:
    model = load("shapes")
    samples = sample_vqa(seed, n, families=FAMILIES)
    recall, rho, cells = {}, {}, [(label, budget) for label in RC_CELLS for budget in (None, 64)]
    tallies, extra = {cell: Tally() for cell in cells}, {cell: {"recovered": [], "digit_kept": []} for cell in cells}
    done = 0
    for batch, encoded, targets in encoded_batches(model, samples, batch_size):
        regions = {"object": targets, "digit": digit_targets(batch, encoded.grid)}
        with torch.no_grad():
            scores = batch_scores(model, encoded, layer)
        for name, score in scores.items():
            for k in TOP_K:
                for region, target in regions.items():
                    recall.setdefault((name, k, region), []).extend(topk_recall(score, target, k).tolist())
            rho.setdefault(name, []).extend(rank_correlation(score, scores["clip"]))
        rc_cells(model, encoded, regions, scores, tallies, extra)
        done += len(batch)
        print(f"{done} / {n} questions", file=sys.stderr)
    families = np.array([s.family for s in samples])
    topk = []
    for (name, k, region), values in recall.items():
        values, reference = np.array(values), np.array(recall["clip", k, region])
        row = {"score": name, "k": k, "region": region, **share_row(values, reference)}
        row["by_family"] = {f: float(np.nanmean(values[families == f])) for f in FAMILIES if region == "object"}
        topk.append(row)
    rc = []
    for (label, budget), tally in tallies.items():
        row = tally.row(Cell(label, "rc", "adaptive" if budget is None else str(budget)), samples, 576,
                        scored(samples, tally.answers))
        row["text_score"] = row.pop("method")
        row.update({name: float(np.nanmean(values)) for name, values in extra[label, budget].items()})
        rc.append(row)
    return {"command": " ".join(["python", "scripts/text_free_scores.py", *sys.argv[1:]]), "seed": seed, "n": n,
            "families": list(FAMILIES), "layer": layer, "n_llm_layers": model.n_llm_layers,
            "topk": topk, "spearman": {name: float(np.mean(values)) for name, values in rho.items()}, "rc": rc}


def markdown(results: dict) -> str:
    """The results as the page benchmarks/results/text-free-scores.md."""
    def share(row):
        low, high = row["share_ci"] or (math.nan, math.nan)
        return f"{row['recall']:.3f} ({row['share_of_clip']:.0%} [{low:.0%}, {high:.0%}])"

    def table(region: str) -> list[str]:
        return [f"| {name} | " + " | ".join(share(by[name, k, region]) for k in TOP_K) +
                (f" | {results['spearman'][name]:.3f} |" if region == "object" else " |") for name in names]

    names = list(dict.fromkeys(row["score"] for row in results["topk"]))
    by = {(row["score"], row["k"], row["region"]): row for row in results["topk"]}
    families = results["families"]
    lines = [
        "# A text score without a text tower, measured on ShapesWorld",
        "",
        f"`{results['command']}`: {results['n']} questions of scene stream {results['seed']} "
        f"(families {', '.join(families)}, round-robin), the shipped `shapes` model (an LLM of "
        f"{results['n_llm_layers']} decoder layers); \"attention\" reads layer {results['layer']}. "
        "What each score is: docs/method.md, \"rclib's extension: a text score without a text tower\". The first "
        "three rows are the reference and the two switches; the others are the variants that defend their choices "
        "(which words, which layer) and the [CLS] attention, which knows nothing of the question.",
        "",
        "## Top-k evidence recall of each score",
        "",
        "Share of the asked-about objects' patches among the k of 576 tokens with the highest score; in brackets its "
        "share of the CLIP score's recall with a paired-bootstrap 95% interval. k random tokens recall k / 576 "
        "(0.028, 0.056, 0.111). rho: Spearman's rank correlation with the CLIP score over the 576 tokens, mean "
        "over the questions.",
        "",
        "| score | " + " | ".join(f"top-{k}" for k in TOP_K) + " | rho |",
        "|---|" + "---|" * (len(TOP_K) + 1),
        *table("object"),
        "",
        "Top-32 recall by question family:",
        "",
        "| score | " + " | ".join(families) + " |",
        "|---|" + "---|" * len(families),
        *[f"| {name} | " + " | ".join(f"{by[name, 32, 'object']['by_family'][f]:.3f}" for f in families) + " |"
          for name in names],
        "",
        "The glyph questions' answer lies in a few patches, those with the digit's ink (the named object holds "
        "20-45 patches): the top-k recall of those patches alone, and its share of the CLIP score's.",
        "",
        "| score | " + " | ".join(f"top-{k}" for k in TOP_K) + " |",
        "|---|" + "---|" * len(TOP_K),
        *table("digit"),
        "",
        "## RC with each text score",
        "",
        "`rc` with `text_sim` replaced by the score (\"no text\": `text_stage=False`; the last rows: the CLIP "
        "score with `knn_text_weight=0`, no text term in the merge). Evidence recall counts the patches of the "
        "asked-about objects that reach the LLM in any form: RC's extra token sums every token it does not keep, so "
        "it is 1 for every score; evidence kept counts those that reach it as themselves, recovered those the text "
        "stage brought back, digit kept the glyph questions' digit patches that reach it as themselves. Accuracy "
        "with its 95% Wilson interval, then by family.",
        "",
        "| text score | budget | tokens | evidence recall | evidence kept | recovered | digit kept | accuracy | "
        + " | ".join(families) + " |",
        "|---|" + "---|" * (7 + len(families)),
    ]
    for row in results["rc"]:
        low, high = row["ci"]["accuracy"]
        lines.append(f"| {row['text_score']} | {row['budget']} | {row['mean_tokens']:.1f} | "
                     f"{row['evidence_recall']:.3f} | {row['evidence_kept']:.3f} | {row['recovered']:.3f} | "
                     f"{row['digit_kept']:.3f} | {row['accuracy']:.3f} [{low:.2f}, {high:.2f}] | "
                     + " | ".join(f"{row[f'accuracy_{f}']:.3f}" for f in families) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="questions, one per scene (default 400)")
    parser.add_argument("--seed", type=int, default=1234, help="scene stream (default 1234, the bench's)")
    parser.add_argument("--layer", type=int, default=ATTENTION_LAYER,
                        help=f"the decoder layer \"attention\" reads (default {ATTENTION_LAYER})")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--out", default="benchmarks/results/text-free-scores", help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    results = measure(args.n, args.seed, args.layer, args.batch_size)
    write_report(args.out, results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
