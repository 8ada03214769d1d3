"""``rclib speed`` on the command line: the sub-command, its flags, and the run of every section in order."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from rclib import cost
from rclib.speed.analytic import cost_rows, flop_check_rows, paper_check
from rclib.speed.config import BENCH_METHODS, CLOCKS, DEFAULT_OUT, DTYPES, MODEL_SHAPES, SpeedConfig
from rclib.speed.e2e import batch_rows, e2e_rows
from rclib.speed.instrument import torch_threads
from rclib.speed.machine import check_memory, importable, load_average, machine_info
from rclib.speed.model import build_llava
from rclib.speed.report import summary, write_results
from rclib.speed.step import LAUNCH_SIZES, agreement_rows, compress_rows, filter_rows, launch_rows, refused_methods


def run_speed(config: SpeedConfig, progress=print) -> dict:
    """Every section; returns the results dict (see :mod:`rclib.speed`). The methods that refuse the model's token
    count (pool: not a square) are left out, and said in ``refused``."""
    device = config.torch_device
    check_memory(config)
    refused = refused_methods(config.methods, config.shapes.n_tokens)
    config = replace(config, methods=tuple(m for m in config.methods if m not in refused))
    results = {"machine": machine_info(device), "config": {**asdict(config), "shapes": shapes_record(config)},
               "refused": refused}
    progress("compression step, B = 1, one thread ...")
    results["compress"] = compress_rows(config)
    results["filters"] = filter_rows(config)
    results["filter_agreement"] = agreement_rows(config) if importable("sklearn") else []
    progress("aten ops and host syncs per compress call ...")
    results["launches"] = launch_rows(config.methods, LAUNCH_SIZES[:1] if config.quick else LAUNCH_SIZES, device)
    progress(f"building a random-weight {config.model_shape} ({config.shapes.lm}) ...")
    model = build_llava(config.shapes, device, config.torch_dtype)
    with torch_threads(config.threads):
        results["machine"]["e2e_threads"] = torch.get_num_threads()
        progress("end to end, B = 1, every method ...")
        results["e2e"], results["released"] = e2e_rows(model, config)
        progress(f"batch scaling {config.batches} ...")
        results["batch"] = batch_rows(model, config)
    del model
    rc_e2e = next(row for row in results["e2e"] if row["method"] == "rc")
    progress("analytic cost and FLOP counts ...")
    results["cost"] = {"rows": cost_rows(mean_tokens(results, "rc"), config.shapes.n_tokens, config.model_shape),
                       "flop_check": flop_check_rows(config.shapes),
                       "paper": paper_check()}
    results["machine"]["load_average_after"] = load_average()
    results["summary"] = summary(results, rc_e2e)
    return results


def shapes_record(config: SpeedConfig) -> dict:
    """The model's shapes as the results file keeps them, with the image tokens N they give."""
    return {**asdict(config.shapes), "n_tokens": config.shapes.n_tokens}


def mean_tokens(results: dict, method: str) -> float:
    return next(row["tokens"] for row in results["compress"] if row["method"] == method)


def cmd_speed(args) -> None:
    config = SpeedConfig(device=args.device, dtype=args.dtype, clock=args.clock, lm=args.lm,
                         model_shape=args.model_shape, threads=args.threads,
                         repeats=args.repeats, batches=tuple(args.batches), new_tokens=args.new_tokens,
                         methods=tuple(args.methods), quick=args.quick)
    results = run_speed(config)
    json_path, md_path = write_results(results, Path(args.out))
    print(md_path.read_text().split("## Compression step")[0])
    print(f"wrote {json_path} and {md_path}")


def add_command(subparsers) -> None:
    """Add the ``speed`` sub-command to an argparse sub-parser set (``rclib speed``)."""
    defaults = SpeedConfig.__dataclass_fields__
    sp = subparsers.add_parser("speed", help="benchmark: compression step, end to end vs the bound, the released "
                               "code's way, batch scaling, analytic cost")
    sp.add_argument("--out", default=str(DEFAULT_OUT), help="folder for speed-<machine>.json and .md")
    sp.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    sp.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    sp.add_argument("--clock", default="wall", choices=list(CLOCKS), help="wall: elapsed time; cpu: this thread's "
                    "CPU time on one thread, which other processes on a busy machine do not inflate")
    sp.add_argument("--lm", default="tinyllama", choices=list(cost.ARCHS), help="the end-to-end model's LLM shape")
    sp.add_argument("--model-shape", default="llava-1.5", choices=list(MODEL_SHAPES),
                    help="llava-1.5: one 336 px view, 576 tokens; llava-next: a 672 x 672 photo, its base view and "
                    "2 x 2 anyres tiles, 2,880 tokens (the memory target at B = 16)")
    sp.add_argument("--threads", type=int, default=None, help="torch threads end to end (default: torch's)")
    sp.add_argument("--repeats", type=int, default=defaults["repeats"].default)
    sp.add_argument("--batches", type=int, nargs="+", default=list(defaults["batches"].default))
    sp.add_argument("--new-tokens", type=int, default=defaults["new_tokens"].default)
    sp.add_argument("--methods", nargs="+", default=list(BENCH_METHODS), choices=list(BENCH_METHODS),
                    help="methods to time (full and rc always run: the summary needs them)")
    sp.add_argument("--quick", action="store_true", help="toy shapes, one repeat: a smoke test of the runner")
    sp.set_defaults(run=cmd_speed)
