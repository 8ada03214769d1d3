"""The ``rclib eval`` and ``rclib table`` sub-commands; ``rclib.cli`` adds them with :func:`add_commands`."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from rclib.bench import DEFAULT_BUDGETS, BenchConfig
from rclib.eval.benchmarks import PAPER_BENCHMARKS, PAPER_CELLS, paper_tasks
from rclib.eval.grid import GridConfig
from rclib.methods import METHODS


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def benchmarks_help() -> str:
    """--help's epilog: the paper's benchmarks and the lmms-eval tasks that score them."""
    lines = ["the paper's benchmarks as lmms-eval tasks (headline metric):"]
    lines += [f"  {b.column:<8} {b.task:<16} {b.metric}" + (f"  ({b.note})" if b.note else "") for b in PAPER_BENCHMARKS]
    tasks = ",".join(b.task for b in PAPER_BENCHMARKS)
    lines += ["", "the paper's rows on llava-1.5-7b, datasets fetched once (docs/eval.md):",
              "  rclib eval --paper --fetch --data eval-data",
              "  rclib eval --paper --data eval-data --out out/paper --processes 8 --batch-size 16",
              "every method at 64, 128, 192 tokens:",
              f"  rclib eval --model llava-1.5-7b --tasks {tasks} --methods full,rc,prumerge,prumerge+,fastervlm,"
              "visionzip,divprune,cdpruner,tome,fastv --budgets adaptive,64,128,192 --data eval-data --out out/grid "
              "--processes 8 --batch-size 16",
              "ShapesWorld, offline: rclib eval --tasks shapesworld --out out/shapes"]
    return "\n".join(lines)


def grid_config(args) -> GridConfig:
    """The grid of the command line (GridConfig checks it before anything runs); --paper: the paper's tasks and
    the cells of its reported rows, on llava-1.5-7b unless --model says otherwise."""
    import os

    defaults = GridConfig()
    if args.paper and args.budgets:
        raise ValueError("--paper runs the budgets of the paper's rows: drop --budgets, or drop --paper and name the "
                         "grid")
    paper_methods = tuple(method for method, _ in PAPER_CELLS)
    if args.paper and set(args.methods or ()) - set(paper_methods):
        raise ValueError(f"--paper --methods picks among the paper's rows, {', '.join(paper_methods)}; got "
                         f"{', '.join(args.methods)}")
    judge_key = any(os.environ.get(key) for key in ("OPENAI_API_KEY", "AZURE_API_KEY"))
    return GridConfig(model=args.model or ("llava-1.5-7b" if args.paper else defaults.model),
                      tasks=args.tasks or (paper_tasks(judge_key) if args.paper else defaults.tasks),
                      methods=args.methods or defaults.methods, budgets=args.budgets or defaults.budgets,
                      cells=tuple(c for c in PAPER_CELLS if c[0] in (args.methods or paper_methods)) if args.paper
                      else (), out=Path(args.out or "."), processes=args.processes,
                      batch_size=args.batch_size, limit=args.limit, model_args=args.model_args,
                      shapes_n=args.shapes_n, data=Path(args.data) if args.data else None,
                      include_path=Path(args.include_path) if args.include_path else None)


def cmd_fetch(config: GridConfig) -> None:
    """Print what the tasks' datasets are and weigh, then download them into config.data."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    from rclib.eval.fetch import describe, fetch, plan
    from rclib.eval.taskdata import HUB, check_tasks, hub_reachable, task_data

    if config.data is None:
        raise ValueError("--fetch needs --data DIR, the folder to download the datasets into")
    if not hub_reachable():
        raise ValueError(f"--fetch downloads from the Hugging Face hub, which is offline (HF_HUB_OFFLINE) or "
                         f"unreachable ({HUB[0]}): run it on a machine with network and copy {config.data} here")
    include = (config.include_path,) if config.include_path else ()
    check_tasks(config.tasks, include)
    items = sorted({item for task in config.tasks for item in task_data(task, include)}, key=str)
    try:
        downloads = plan(items, HfApi())
        print(describe(downloads, config.data), flush=True)
        fetch(downloads, config.data)
    except (GatedRepoError, RepositoryNotFoundError) as error:  # gated: a 401/403 without an accepted licence
        raise ValueError(f"{' '.join(str(error).split())[:300]}: run `hf auth login` with a token of an account "
                         "that accepted the dataset's terms on its hub page") from error
    print(f"done: pass --data {config.data} to rclib eval (offline too)")


def require_eval_extra() -> None:
    if importlib.util.find_spec("lmms_eval") is None:
        raise ValueError("this command needs lmms-eval: pip install 'rclib[eval]' (or make setup)")


def cmd_eval(args) -> None:
    from rclib.eval.shapesworld import tasks_dir

    require_eval_extra()
    if args.tasks_dir:
        print(tasks_dir(n=args.shapes_n))
        return
    config = grid_config(args)
    if args.fetch:
        cmd_fetch(config)
        return
    if not args.out:
        raise ValueError("pass --out DIR, the folder of the cells' lmms-eval results")
    from rclib.eval.grid import run_grid
    from rclib.eval.preflight import check_setup
    from rclib.eval.table import markdown, table_rows
    from rclib.outputs import folder_lock, follow

    check_setup(config)
    out = follow(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):  # a second eval into the same folder fails at once instead of doubling the samples
        done, failed = run_grid(config)
    if done:
        print(markdown(table_rows(done)))
    if failed:
        stored = [name for name in failed if (out / name / "responses" / "responses.db").is_file()]
        raise ValueError(f"no results for cell(s) {', '.join(failed)}: lmms-eval printed why above. The same command "
                         "reruns them" + (f"; {', '.join(stored)} resume from the answers stored" if stored else ""))


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
    sp.add_argument("--model", default=None, help=f"registry name ({defaults.model} (default), llava-1.5-7b (--paper's "
                    "default), ...), hub id or folder; a LLaVA-1.5 folder gets LLaVA-1.5's padding and prompt")
    sp.add_argument("--tasks", type=comma_list, default=None,
                    help=f"lmms-eval task names, comma-separated (default {','.join(defaults.tasks)}, offline; "
                    "--paper: the paper's six)")
    sp.add_argument("--paper", action="store_true",
                    help="the paper's table: its six benchmarks and the cells of its rows (full, tome at "
                    f"{PAPER_CELLS[1][1]}, prumerge and rc adaptive; --methods picks some of them)")
    sp.add_argument("--data", default=None, help="folder of local dataset copies, <data>/<hub id>/ (e.g. "
                    "eval-data/lmms-lab-encoder/POPE); lmms-eval runs there, so it reads them offline")
    sp.add_argument("--fetch", action="store_true",
                    help="download the tasks' datasets into --data (prints the files and sizes first), then stop")
    sp.add_argument("--include-path", default=None,
                    help="a folder of lmms-eval task YAMLs of your own (lmms-eval --include_path)")
    sp.add_argument("--methods", type=comma_list, default=None,
                    help=f"comma-separated (default: all but oracle): {', '.join(METHODS)}")
    sp.add_argument("--budgets", type=comma_list, default=None, help="comma-separated (default "
                    f"{','.join(DEFAULT_BUDGETS)}): adaptive (methods that choose K), a token count, or a share like "
                    "64/576")
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
