"""``rclib eval``: lmms-eval over a grid of (method, budget) cells, one result folder per cell.

Each cell is one run of lmms-eval's own command line (``python -m lmms_eval --model rclib ...``, or
``accelerate launch --multi_gpu --num_processes N -m lmms_eval ...`` to split the questions over N
processes), writing to ``<out>/<method>_<budget>/``. A cell whose folder already holds results of the same
model_args and --limit for every requested task is skipped; a cell that was interrupted resumes from the answers its model stored batch by batch in
``<out>/<method>_<budget>/responses`` (lmms-eval's response cache, see :mod:`rclib.eval.model`). The cells
are rclib bench's: full once, "adaptive" only for the methods that choose K themselves.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rclib.bench import DEFAULT_BUDGETS, BenchConfig, bench_cells
from rclib.eval.benchmarks import ASSUMED_RATE, task_questions
from rclib.eval.result_files import read_results
from rclib.eval.shapesworld import GROUP as SHAPESWORLD
from rclib.eval.shapesworld import tasks_dir
from rclib.methods import METHODS

NO_BUDGET = "all"  # the budget of a cell whose method keeps every token (full)


@dataclass
class GridConfig:
    model: str = "shapes"  # registry name, hub id or folder (lmms-eval model_args `pretrained`)
    tasks: tuple[str, ...] = (SHAPESWORLD,)  # lmms-eval task or group names
    methods: tuple[str, ...] = tuple(m for m in METHODS if "target" not in METHODS[m].needs)  # oracle: bench only
    budgets: tuple[str, ...] = DEFAULT_BUDGETS  # "adaptive", a token count, or a share of N such as 64/576
    out: Path = Path("out/eval")
    processes: int = 1  # > 1: each cell data-parallel over this many processes (one GPU each) via accelerate
    batch_size: int = 8  # questions per forward pass in each process
    limit: int | None = None  # questions per task (lmms-eval --limit), for a quick look; not for the table
    model_args: str = ""  # more model_args for every cell, e.g. "text_encoder=...,preset=released"
    shapes_n: int = BenchConfig.n  # ShapesWorld questions (rclib bench's, same seed)
    data: Path | None = None  # folder of local dataset copies (<data>/<hub id>/); lmms-eval runs in it
    include_path: Path | None = None  # a folder of task YAMLs of one's own (lmms-eval --include_path)
    cells: tuple[tuple[str, str], ...] = ()  # explicit (method, budget) cells; empty: bench's of methods x budgets

    def __post_init__(self):
        if self.processes < 1 or self.batch_size < 1:
            raise ValueError(f"processes and batch_size must be at least 1, got {self.processes} and {self.batch_size}")
        if not self.tasks:
            raise ValueError("name at least one lmms-eval task (e.g. pope,textvqa_val or shapesworld)")
        BenchConfig(methods=self.methods, budgets=self.budgets)  # raises for unknown methods, malformed budgets
        needs_truth = [m for m in self.methods if "target" in METHODS[m].needs]
        if needs_truth:
            raise ValueError(f"{', '.join(needs_truth)} read the ground-truth object mask, which lmms-eval tasks "
                             "do not give; run them with rclib bench")
        if self.include_path and any(t.startswith(SHAPESWORLD) for t in self.tasks):
            raise ValueError("lmms-eval takes one --include_path and ShapesWorld uses it: run shapesworld and the "
                             "tasks of --include-path as two rclib eval commands")


def cell_name(method: str, budget: str) -> str:
    """The folder of a cell: ``rc_64``, ``rc_64of576``, ``full_all``."""
    return f"{method}_{budget}".replace("/", "of")


def model_args(config: GridConfig, method: str, budget: str) -> str:
    """lmms-eval's --model_args of a cell; its answers are stored in the cell's ``responses`` folder."""
    cell = config.out / cell_name(method, budget)
    model = Path(config.model).resolve() if config.data and Path(config.model).exists() else config.model  # cwd moves
    args = [f"pretrained={model}", f"method={method}"]
    args += [] if budget == NO_BUDGET else [f"budget={budget}"]
    args += [f"cache={cell.resolve() / 'responses'}"] + ([config.model_args] if config.model_args else [])
    return ",".join(args)


def command(config: GridConfig, method: str, budget: str, include_path: Path | None) -> list[str]:
    """The command line of one cell."""
    lmms_eval = ["-m", "lmms_eval", "--model", "rclib", "--model_args", model_args(config, method, budget),
                 "--tasks", ",".join(config.tasks), "--batch_size", str(config.batch_size),
                 "--output_path", str((config.out / cell_name(method, budget)).resolve()), "--log_samples"]
    include_path = include_path or config.include_path
    lmms_eval += ["--include_path", str(Path(include_path).resolve())] if include_path else []
    lmms_eval += ["--limit", str(config.limit)] if config.limit else []
    if config.processes == 1:
        return [sys.executable, *lmms_eval]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(config.processes),
            "--num_machines", "1", "--main_process_port", str(free_port()),  # not the fixed 29500: runs side by side
            "--mixed_precision", "no", "--dynamo_backend", "no", *lmms_eval]


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (for the processes' rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(config: GridConfig) -> dict[str, str]:
    """What a cell's command adds to the environment: without GPUs, accelerate's multi-process launcher runs
    CPU processes only when told so (its --cpu flag alone starts a single process)."""
    import torch

    return {"ACCELERATE_USE_CPU": "true"} if config.processes > 1 and not torch.cuda.is_available() else {}


def finished(folder: Path, config: GridConfig, method: str, budget: str) -> bool:
    """True when a results file in the cell's folder has the cell's model_args and limit and covers every task."""
    limit = float(config.limit) if config.limit else None
    for path in folder.rglob("*_results.json"):
        results = read_results(path)  # a damaged file is named and skipped: the cell runs again
        if results is not None and (results["config"].get("model_args") == model_args(config, method, budget)
                and results["config"].get("limit") == limit and set(config.tasks) <= set(results["results"])):
            return True
    return False


def grid_cells(config: GridConfig) -> list[tuple[str, str]]:
    """The (method, budget) cells to run, in order."""
    if config.cells:
        return list(config.cells)
    return [(cell.method, cell.budget if METHODS[cell.method].takes_budget else NO_BUDGET)
            for cell in bench_cells(BenchConfig(methods=config.methods, budgets=config.budgets))]


def cell_questions(config: GridConfig) -> int | None:
    """Questions one cell answers (known tasks only; None when a task's size is unknown)."""
    sizes = [task_questions(task) for task in config.tasks]
    if None in sizes:
        return None
    return sum(min(n, config.limit) if config.limit else n for n in sizes)


def estimate(config: GridConfig, cells: int) -> str:
    """The grid's cost before it starts: questions and GPU hours at ASSUMED_RATE questions a second per GPU."""
    questions = cell_questions(config)
    if questions is None:
        return f"{cells} cells; their size is unknown for some task (measured after the first cell)"
    hours = cells * questions / ASSUMED_RATE / 3600
    return (f"{cells} cells of {questions:,} questions: about {hours:.1f} GPU hours ({hours / config.processes:.1f} h "
            f"on {config.processes} GPU(s)) at an assumed {ASSUMED_RATE:g} questions/s per GPU for a 7B model; "
            "measured after the first cell")


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def run_grid(config: GridConfig) -> tuple[list[Path], list[str]]:
    """Run every unfinished cell. Returns the folders of the finished cells (the input of ``rclib table``) and
    the names of the cells that failed; a failed cell does not stop the others. Prints the estimate first and,
    once a cell has run, the time the rest should take (lmms-eval shows each cell's own progress bar)."""
    include_path = tasks_dir(n=config.shapes_n) if any(t.startswith(SHAPESWORLD) for t in config.tasks) else None
    cells = grid_cells(config)
    todo = [c for c in cells if not finished(config.out / cell_name(*c), config, *c)]
    print(f"rclib eval: {estimate(config, len(todo))}", flush=True)
    done, failed, seconds = [], [], []
    for i, (method, budget) in enumerate(cells, 1):
        folder = config.out / cell_name(method, budget)
        if finished(folder, config, method, budget):
            print(f"[{i}/{len(cells)}] {folder.name}: done before, skipped", flush=True)
        else:
            left = f", the grid ~{hours(len(todo) * sum(seconds) / len(seconds))} more" if seconds else ""
            print(f"[{i}/{len(cells)}] {folder.name}: running lmms-eval{left}", flush=True)
            start = time.monotonic()
            subprocess.run(command(config, method, budget, include_path), env={**os.environ, **launch_env(config)},
                           cwd=config.data)  # datasets.load_dataset("owner/name") reads <data>/owner/name
            seconds.append(time.monotonic() - start)
            todo.remove((method, budget))
        if finished(folder, config, method, budget):  # lmms-eval prints a failed evaluation and exits 0
            done.append(folder)
        else:
            failed.append(folder.name)
    return done, failed
