"""The paper's table from lmms-eval result folders: one row per (model, method, budget, options, limit).

Any lmms-eval results file counts (``<output_path>/<model>/<date>_results.json``), also one written
outside ``rclib eval``. A row reads its method, budget and options from the run's model_args (``--model rclib``;
another lmms-eval model is a row of its own, budget "all") and its ``--limit`` (a quick look, not the paper's
numbers: the column ``limit`` says so), the mean number of visual tokens the LLM saw
from the run's ``throughput`` (see :mod:`rclib.eval.model`), and one headline metric per benchmark
(:mod:`rclib.eval.benchmarks`). Several files of one row merge, the newest result of a task winning.
``share_of_full`` is the mean, over the benchmarks both rows have, of the row's score over the full
model's (percent), the full row of the same model and limit, with the same options where there is one; a
column ``A/B`` (a ShapesWorld family) details column A and is left out of it.
"""
from __future__ import annotations

import csv
import inspect
from dataclasses import dataclass, field
from pathlib import Path

from rclib.eval.benchmarks import COLUMN_ORDER, REPORTED, REPORTED_MODEL, REPORTED_SOURCE, Benchmark, benchmark_for
from rclib.eval.grid import NO_BUDGET
from rclib.eval.result_files import read_results, result_files
from rclib.methods import METHODS
from rclib.methods.common import ADAPTIVE

MEASURED = "measured"
KEYS = ("source", "model", "method", "budget", "options", "limit", "visual_tokens")  # before the benchmarks' columns


def rclib_defaults() -> dict:
    """model_args the rclib model fills in when a run leaves them out."""
    from rclib.eval.model import RclibModel

    return {name: p.default for name, p in inspect.signature(RclibModel.__init__).parameters.items()
            if p.default is not p.empty}


def row_key(config: dict) -> tuple[str, str, str, str, str]:
    """(model, method, budget, options, limit) of a run: options are the model_args that change answers
    ("key=value,..."), limit lmms-eval's --limit ("" for every question)."""
    from lmms_eval.utils import simple_parse_args_string

    args = config.get("model_args") or {}
    args = simple_parse_args_string(args) if isinstance(args, str) else dict(args)
    limit = "" if config.get("limit") is None else f"{config['limit']:g}"
    if config["model"] != "rclib":
        return str(args.get("pretrained", config["model"])), config["model"], NO_BUDGET, "", limit
    from rclib.eval.model import RUN_SETTINGS

    args = {**rclib_defaults(), **args}
    model, method, budget = str(args.pop("pretrained")), str(args.pop("method")), str(args.pop("budget"))
    options = {k: v for k, v in args.items() if k not in RUN_SETTINGS and v is not None}
    options.pop("text_encoder", None)  # the registry's pairing unless given; part of the model, not the method
    label = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return model, method, budget if method not in METHODS or METHODS[method].takes_budget else NO_BUDGET, label, limit


def headline(task: str, metrics: dict) -> tuple[Benchmark, float] | None:
    """The benchmark of a task and its headline value in the paper's unit; unknown tasks: first metric, as is."""
    values = {key.split(",")[0]: value for key, value in metrics.items()
              if isinstance(value, (int, float)) and "_stderr" not in key}
    benchmark = benchmark_for(task) or (Benchmark(task, task, next(iter(values)), 1.0) if values else None)
    if benchmark is None or benchmark.metric not in values:
        return None
    return benchmark, values[benchmark.metric] * benchmark.scale


@dataclass
class Row:
    """What the result files of one (model, method, budget) say."""

    scores: dict[str, tuple[str, float]] = field(default_factory=dict)  # column -> (date, value)
    tokens: dict[str, tuple[str, float, int]] = field(default_factory=dict)  # task -> (date, mean, samples)

    def add(self, results: dict) -> None:
        date = str(results.get("date", ""))
        for task, metrics in results["results"].items():
            found = headline(task, metrics)
            if found and date >= self.scores.get(found[0].column, ("",))[0]:
                self.scores[found[0].column] = (date, found[1])
        throughput = results.get("throughput") or {}
        for task, counts in (results.get("n-samples") or {}).items():
            mean = throughput.get(f"avg_visual_tokens/{task}")
            if mean is not None and date >= self.tokens.get(task, ("",))[0]:
                self.tokens[task] = (date, mean, counts["effective"])

    def visual_tokens(self) -> float | None:
        """Mean visual tokens over all answered requests of the row (tasks weighted by their sizes)."""
        samples = sum(n for _, _, n in self.tokens.values())
        return sum(mean * n for _, mean, n in self.tokens.values()) / samples if samples else None


def columns(rows: list[dict]) -> list[str]:
    """The benchmark columns present in the rows: the paper's order, others by name, each followed by its details."""
    present = {key for row in rows for key in row} - set(KEYS) - {"share_of_full"}
    order = {column: i for i, column in enumerate(COLUMN_ORDER)}
    return sorted(present, key=lambda c: (order.get(c.partition("/")[0], len(order)), c.partition("/")[0], c))


def add_share_of_full(rows: list[dict]) -> None:
    """``share_of_full`` (percent) of each row against the "full" row of its source, model and limit: the one with
    the row's options, else the one without options."""
    full = {(r["source"], r["model"], r.get("limit"), r.get("options")): r for r in rows if r["method"] == "full"}
    for row in rows:
        group = (row["source"], row["model"], row.get("limit"))
        reference = full.get((*group, row.get("options"))) or full.get((*group, None)) or {}
        shared = [c for c in columns([row]) if "/" not in c and reference.get(c) and row.get(c) is not None]
        row["share_of_full"] = (100 * sum(row[c] / reference[c] for c in shared) / len(shared)) if shared else None


def budget_order(budget: str) -> tuple:
    """all, adaptive, then fixed budgets by size."""
    if budget in (NO_BUDGET, ADAPTIVE):
        return (0, budget == ADAPTIVE, 0.0)
    numerator, _, denominator = budget.partition("/")
    return (1, False, float(numerator) / float(denominator or 1))


def row_order(model: str, method: str, budget: str, options: str, limit: str) -> tuple:
    """By model and limit, then rclib's method order (other lmms-eval models last), budget, options."""
    position = list(METHODS).index(method) if method in METHODS else len(METHODS)
    return model, limit, position, method, budget_order(budget), options


def measured_rows(folders: list[str | Path]) -> list[dict]:
    """One row per (model, method, budget) found in the lmms-eval result folders; damaged files are skipped."""
    found: dict[tuple[str, str, str, str, str], Row] = {}
    for path in result_files(folders):
        results = read_results(path)
        if results is not None:
            found.setdefault(row_key(results["config"]), Row()).add(results)
    rows = [{"source": MEASURED, "model": model, "method": method, "budget": budget, "options": options or None,
             "limit": limit or None, "visual_tokens": row.visual_tokens(),
             **{c: value for c, (_, value) in row.scores.items()}}
            for (model, method, budget, options, limit), row in sorted(found.items(),
                                                                       key=lambda item: row_order(*item[0]))]
    add_share_of_full(rows)
    return rows


def reported_rows() -> list[dict]:
    """The authors' numbers (see :data:`rclib.eval.benchmarks.REPORTED`), labelled as reported."""
    rows = [{"source": REPORTED_SOURCE, "model": REPORTED_MODEL, "options": None, "limit": None, **r} for r in REPORTED]
    add_share_of_full(rows)
    return rows


def table_rows(folders: list[str | Path], reported: bool = False) -> list[dict]:
    """Measured rows, then (``reported=True``) the authors' reported rows: plain dicts, one call for a notebook."""
    return measured_rows(folders) + (reported_rows() if reported else [])


def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table, columns as in :func:`write_csv`."""
    header = [*KEYS, *columns(rows), "share_of_full"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(row.get(key)) for key in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    header = [*KEYS, *columns(rows), "share_of_full"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
