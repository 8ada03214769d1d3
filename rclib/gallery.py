"""The gallery: the figures the notebooks, the CLI and ``figures/`` show, made by running a model, and the
sentences that say what a result shows.

Each function here runs a loaded model on examples (:mod:`rclib.examples`): encode once per batch,
compress with each method, sometimes generate; it then hands images, results and scores to
:mod:`rclib.viz`, which only draws. :func:`render_figures` writes the notebooks' main figures as PNGs
(``make figures`` / ``rclib figures``), so ``figures/`` holds what the notebooks show. :func:`trend` and
:func:`ranking` put numbers into words, so that a notebook's sentence after a result is true of the model
that ran it.
"""
from __future__ import annotations

from pathlib import Path

from rclib import viz
from rclib.bench import BenchConfig, run_bench
from rclib.examples import EXAMPLE_METHODS, Example, examples_for_model, learned_families
from rclib.filters import RULES, filter_decision
from rclib.methods import METHODS
from rclib.models.compressed import other_layouts
from rclib.views import image_views

# The columns of the token-map grid: every method that compresses an example before the LLM.
GRID_METHODS = tuple(name for name in EXAMPLE_METHODS
                     if METHODS[name].takes_budget and METHODS[name].placement == "before_llm")
CURVE_METHODS = tuple(name for name, spec in METHODS.items() if spec.featured)  # a readable subset for figures/
CURVE_BUDGETS = ("adaptive", "32/576", "64/576", "128/576")


def overview_figure(model, example: Example, **options):
    """The paper's Figure 1 on one example: RC's four stages and the compressed answer."""
    run = model.answer(example.image, example.question, "rc", **options)
    return viz.overview(image_views(model, run.encoded), run.result, None, example.question, run.texts[0],
                        run.counts(0))


def threshold_figure(model, example: Example, n_neighbors: int = 20):
    """Where each filter rule (LOF, IQR) cuts the visual scores of one example, side by side."""
    encoded = model.encode(example.image, example.question)
    scores = encoded.cls_attn[:1]  # [1, N]
    labels = {"lof": f"LOF ({n_neighbors} neighbours)", "iqr": "IQR"}
    decisions = {labels[rule]: filter_decision(scores, rule, n_neighbors) for rule in RULES}
    return viz.filter_thresholds(scores[0], decisions, xlabel="visual score ([CLS] attention)")


def method_grid_figure(model, examples: list[Example], methods=None):
    """Token-fate maps of each method (at its default budget) on the same examples, an example's question above
    its row; an image of a tiled family is drawn as its views (the base view, the tiles' picture), a line each.
    methods: default :data:`GRID_METHODS`, less those that read one square patch grid where an image is not one."""
    encoded = model.encode([e.image for e in examples], [e.question for e in examples])
    if methods is None:
        methods = [m for m in GRID_METHODS if METHODS[m].layout != "grid" or not other_layouts(encoded)]
    results = {m: model.compress(encoded, m) for m in methods}
    titles = [e.name if e.question in e.name else f"{e.name}: {e.question}" for e in examples]  # photos name theirs
    views = [image_views(model, encoded, b) for b in range(len(examples))]
    return viz.method_grid(views, results, None, titles)


def answer_figures(model, run, b: int = 0) -> dict:
    """The figures of sample ``b`` of an answered :class:`~rclib.models.Run`: name -> Figure.

    "scores": both score maps (kept and recovered outlined) and the token-fate map; "overview" (RC only):
    the paper's Figure 1 with the question and the answer. An image of a tiled family is drawn as its views (the
    base view, the tiles' picture); token counts are in the model's units (``Run.counts``).
    """
    encoded, result, counts = run.encoded, run.result[b], run.counts(b)
    views = image_views(model, encoded, b)
    figures = {"scores": viz.score_maps(views, None, encoded.cls_attn[b], encoded.text_sim[b], result,
                                        counts=counts)}
    if run.method == "rc":
        figures["overview"] = viz.overview(views, result, None, encoded.questions[b], run.texts[b], counts)
    return figures


def bench_rows(model, n: int = 24, methods=CURVE_METHODS, budgets=CURVE_BUDGETS, seed: int = 1234,
               families=None) -> list[dict]:
    """A small ShapesWorld bench (``rclib.bench``): one row per method and budget; ``families`` None: all."""
    config = BenchConfig(methods=tuple(methods), budgets=tuple(budgets), families=families and tuple(families), n=n,
                         seed=seed)
    return run_bench(model, config, progress=False)


def render_figures(out_dir: Path | str, model="shapes", n_bench: int = 24) -> list[Path]:
    """Write the notebooks' main figures as PNGs to ``out_dir``; returns their paths.

    model: a loaded :class:`~rclib.models.CompressedModel` or a name / folder for ``rclib.models.load``.
    """
    from rclib.models import load

    name = model if isinstance(model, str) else getattr(model, "name", "")
    model = load(model) if isinstance(model, (str, Path)) else model
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = examples_for_model(str(name))
    rows = bench_rows(model, n_bench, families=learned_families(model))
    figures = {
        "overview": overview_figure(model, cases[0]),
        "filter_thresholds": threshold_figure(model, cases[0]),
        "method_grid": method_grid_figure(model, cases[:3]),
        "accuracy_vs_tokens": viz.accuracy_vs_tokens(rows),
        "accuracy_breakdown": viz.accuracy_vs_tokens(rows, tuple(k for k in rows[0] if k.startswith("accuracy_"))),
    }
    paths = []
    for stem, figure in figures.items():
        paths.append(out_dir / f"{stem}.png")
        figure.savefig(paths[-1], dpi=120, bbox_inches="tight")
        viz.close(figure)
    return paths


SAME = 0.02  # differences up to this are read as no change (a few questions of a small benchmark)


def trend(before: float, after: float, same: float = SAME) -> str:
    """A change in words: "rises from 0.40 to 0.80", "falls from ...", "stays at 0.80" (within ``same``)."""
    if abs(after - before) <= same:
        return f"stays at {after:.2f}" if round(after, 2) == round(before, 2) else \
            f"barely moves ({before:.2f} to {after:.2f})"
    return f"{'rises' if after > before else 'falls'} from {before:.2f} to {after:.2f}"


def ranking(rows: list[dict], metric: str, budget, top: int = 4) -> str:
    """The methods of bench rows at one budget by ``metric``, best first: "divprune 0.81 > rc 0.70 ~ random 0.69".
    ">" where the 95% intervals (``row["ci"]``) separate the two neighbours, "~" where they overlap (or a row has
    no interval): a ranking is stated only where the data separate it."""
    at_budget = sorted((r for r in rows if r["budget"] == budget and metric in r), key=lambda r: -r[metric])[:top + 1]
    shown = f"{at_budget[0]['method']} {at_budget[0][metric]:.2f}" if at_budget else ""
    for better, worse in zip(at_budget, at_budget[1:top]):
        high, low = better.get("ci", {}).get(metric), worse.get("ci", {}).get(metric)
        separated = high is not None and low is not None and low[1] < high[0]
        shown += f" {'>' if separated else '~'} {worse['method']} {worse[metric]:.2f}"
    more = sum(1 for r in rows if r["budget"] == budget and metric in r) - top
    return shown + (f" (then {more} more)" if more > 0 else "")
