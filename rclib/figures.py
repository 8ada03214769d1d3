"""The notebooks' main figures, from a loaded model to a Figure; ``render_figures`` writes them as PNGs.

``rclib.viz`` draws from results; this file runs the model to get them (encode once per batch, then
compress with each method) for the example images. The notebooks call these recipes, so the figures
in ``figures/`` (``make figures`` / ``rclib figures``) are the ones the notebooks show.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rclib import viz
from rclib.bench import BenchConfig, run_bench

SAMPLE_IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"
EXAMPLE_SEED = 7  # ShapesWorld stream of the example scenes (the shipped models train on other seeds)
GRID_METHODS = ("rc", "prumerge", "prumerge+", "fastervlm", "visionzip", "divprune", "pool")
BENCH_METHODS = ("full", "rc", "prumerge", "fastervlm", "visionzip", "random")
BENCH_BUDGETS = ("adaptive", "32/576", "64/576", "128/576")


@dataclass
class Example:
    """An image with a question, and what is known about it."""

    name: str
    image: object  # HWC uint8 array, PIL image or path
    question: str
    answer: str | None = None  # the true answer, when known (ShapesWorld)


def shapes_examples(n: int = 4, seed: int = EXAMPLE_SEED) -> list[Example]:
    """ShapesWorld scenes with their question and answer (the world the embedded model knows)."""
    from rclib.shapes.world import sample_vqa

    return [Example(f"shapes scene {i}", s.image, s.question, s.answer) for i, s in enumerate(sample_vqa(seed, n))]


def photo_examples(folder: Path = SAMPLE_IMAGES) -> list[Example]:
    """The bundled photographs with their questions (``questions.json``); none if it is missing."""
    listing = folder / "questions.json"
    if not listing.is_file():
        return []
    questions = json.loads(listing.read_text())
    return [Example(f"{Path(file).stem}: {q}", folder / file, q) for file, asked in questions.items() for q in asked]


def examples(model_name: str = "shapes", n_scenes: int = 4) -> list[Example]:
    """Examples for a model: ShapesWorld scenes first for the embedded model, the photographs first otherwise."""
    scenes, photos = shapes_examples(n_scenes), photo_examples()
    return scenes + photos if model_name == "shapes" else photos + scenes


def overview_figure(model, example: Example, **options):
    """The paper's Figure 1 on one example: RC's four stages and the compressed answer."""
    encoded = model.encode(example.image, example.question)
    result = model.compress(encoded, "rc", **options)
    answer = model.generate(encoded, result)[0]
    return viz.overview(viz.image_from_pixels(encoded.pixel_values[0]), result, encoded.grid, example.question, answer)


def threshold_figure(model, example: Example, n_neighbors: int = 20):
    """Where the LOF and the IQR rule cut the visual scores of one example, side by side."""
    encoded = model.encode(example.image, example.question)
    return viz.filter_thresholds(encoded.cls_attn[0], n_neighbors, "visual score ([CLS] attention)")


def method_grid_figure(model, examples: list[Example], methods=GRID_METHODS):
    """Token-fate maps of each method (columns, at its default budget) on the same examples (rows)."""
    encoded = model.encode([e.image for e in examples], [e.question for e in examples])
    results = {m: model.compress(encoded, m) for m in methods}
    images = [viz.image_from_pixels(p) for p in encoded.pixel_values]
    return viz.method_grid(images, results, encoded.grid, [e.name for e in examples])


def bench_rows(model, n: int = 24, methods=BENCH_METHODS, budgets=BENCH_BUDGETS, seed: int = 1234) -> list[dict]:
    """A small ShapesWorld bench (``rclib.bench``): one row per method and budget."""
    return run_bench(model, BenchConfig(methods=tuple(methods), budgets=tuple(budgets), n=n, seed=seed),
                     progress=False)


def render_figures(out_dir: Path | str, model="shapes", n_bench: int = 24) -> list[Path]:
    """Write the notebooks' main figures as PNGs to ``out_dir``; returns their paths.

    model: a loaded :class:`~rclib.models.CompressedLlava` or a name / folder for ``rclib.models.load``.
    """
    from rclib.models import load

    name = model if isinstance(model, str) else getattr(model, "name", "")
    model = load(model) if isinstance(model, (str, Path)) else model
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = examples(str(name))
    rows = bench_rows(model, n_bench)
    figures = {
        "overview": overview_figure(model, cases[0]),
        "filter_thresholds": threshold_figure(model, cases[0]),
        "method_grid": method_grid_figure(model, cases[:3]),
        "accuracy_vs_tokens": viz.accuracy_vs_tokens(rows),
        "accuracy_by_size": viz.accuracy_vs_tokens(rows, ("accuracy_small", "accuracy_large")),
    }
    paths = []
    for stem, figure in figures.items():
        paths.append(out_dir / f"{stem}.png")
        figure.savefig(paths[-1], dpi=120, bbox_inches="tight")
        viz.close(figure)
    return paths
