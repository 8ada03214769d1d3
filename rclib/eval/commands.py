"""The ``rclib eval`` and ``rclib table`` sub-commands; ``rclib.cli`` adds them with :func:`add_commands`."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from rclib.bench import DEFAULT_BUDGETS, BenchConfig
from rclib.eval.benchmarks import PAPER_BENCHMARKS
from rclib.eval.grid import GridConfig
from rclib.methods import METHODS


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def benchmarks_help() -> str:
    """--help's epilog: the paper's benchmarks and the lmms-eval tasks that score them."""
    lines = ["the paper's benchmarks as lmms-eval tasks (headline metric):"]
    lines += [f"  {b.column:<8} {b.task:<16} {b.metric}" + (f"  ({b.note})" if b.note else "") for b in PAPER_BENCHMARKS]
    tasks = ",".join(b.task for b in PAPER_BENCHMARKS)
    lines += ["", "the paper's table on llava-1.5-7b (docs/eval.md):",
              f"  rclib eval --model llava-1.5-7b --tasks {tasks} --methods full,rc,prumerge,prumerge+,fastervlm,"
              "visionzip,divprune,cdpruner,fastv --budgets adaptive,64,128,192 --out out/paper --processes 8 "
              "--batch-size 16",
              "ShapesWorld, offline: rclib eval --tasks shapesworld --out out/shapes"]
    return "\n".join(lines)


def grid_config(args) -> GridConfig:
    """The grid of the command line (GridConfig checks it before anything runs)."""
    return GridConfig(model=args.model, tasks=args.tasks, methods=args.methods, budgets=args.budgets,
                      out=Path(args.out), processes=args.processes, batch_size=args.batch_size, limit=args.limit,
                      model_args=args.model_args, shapes_n=args.shapes_n)


def require_eval_extra() -> None:
    if importlib.util.find_spec("lmms_eval") is None:
        raise ValueError("this command needs lmms-eval: pip install 'rclib[eval]' (or make setup)")


def cmd_eval(args) -> None:
    from rclib.eval.shapesworld import tasks_dir

    require_eval_extra()
    if args.tasks_dir:
        print(tasks_dir(n=args.shapes_n))
        return
    if not args.out:
        raise ValueError("pass --out DIR, the folder of the cells' lmms-eval results")
    from rclib.eval.grid import run_grid
    from rclib.eval.table import markdown, table_rows
    from rclib.outputs import folder_lock, follow

    out = follow(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):  # a second eval into the same folder fails at once instead of doubling the samples
        done, failed = run_grid(grid_config(args))
    if done:
        print(markdown(table_rows(done)))
    if failed:
        raise ValueError(f"no results for cell(s) {', '.join(failed)}: lmms-eval printed why above. The same command "
                         "reruns them, resuming from the answers already stored")


def cmd_table(args) -> None:
    from rclib.eval.table import markdown, table_rows, write_csv

    require_eval_extra()

    rows = table_rows(args.folders, reported=args.reported)
    if not rows:
        raise ValueError(f"no lmms-eval results (*_results.json) under {', '.join(args.folders)}")
    text = markdown(rows)
    print(text)
    if args.out:
        from rclib.outputs import output_folder

        with output_folder(Path(args.out), "table") as folder:
            (folder / "table.md").write_text(text)
            write_csv(rows, folder / "table.csv")
        print(f"wrote {args.out}/table.md and table.csv")


def add_commands(subparsers) -> None:
    """Add ``eval`` and ``table`` to rclib's sub-command parsers (each sets ``run``)."""
    defaults = GridConfig()
    sp = subparsers.add_parser("eval", help="lmms-eval benchmarks over methods x budgets, one results folder per cell",
                               epilog=benchmarks_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--model", default=defaults.model, help="registry name (shapes, llava-1.5-7b, ...), hub id or folder")
    sp.add_argument("--tasks", type=comma_list, default=defaults.tasks,
                    help="lmms-eval task names, comma-separated (see below; shapesworld runs offline)")
    sp.add_argument("--methods", type=comma_list, default=defaults.methods, help=f"comma-separated: {', '.join(METHODS)}")
    sp.add_argument("--budgets", type=comma_list, default=DEFAULT_BUDGETS,
                    help="comma-separated: adaptive (methods that choose K), a token count, or a share like 64/576")
    sp.add_argument("--out", default=None, help="folder of the cells (<method>_<budget>/)")
    sp.add_argument("--processes", type=int, default=defaults.processes,
                    help="processes per cell through accelerate launch, one GPU each (CPU processes without GPUs)")
    sp.add_argument("--batch-size", type=int, default=defaults.batch_size, help="questions per forward pass")
    sp.add_argument("--limit", type=int, default=None, help="questions per task, for a quick look (lmms-eval --limit)")
    sp.add_argument("--model-args", default="", help="more lmms-eval model_args for every cell, e.g. "
                    "text_encoder=open_clip-vit-large-patch14-336,preset=released")
    sp.add_argument("--shapes-n", type=int, default=BenchConfig.n, help="ShapesWorld questions (rclib bench's seed)")
    sp.add_argument("--tasks-dir", action="store_true",
                    help="print the ShapesWorld task folder for lmms-eval's --include_path (data made if missing)")
    sp.set_defaults(run=cmd_eval)

    sp = subparsers.add_parser("table", help="the paper's table from lmms-eval result folders (Markdown, CSV)")
    sp.add_argument("folders", nargs="+", help="lmms-eval output folders (any depth), e.g. the --out of rclib eval")
    sp.add_argument("--reported", action="store_true", help="add the authors' reported rows, labelled as reported")
    sp.add_argument("--out", default=None, help="also write table.md and table.csv here")
    sp.set_defaults(run=cmd_table)
