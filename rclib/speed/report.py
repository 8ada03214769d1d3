"""What ``rclib speed`` reports: the headline numbers against the targets, and the results as
``speed-<machine>.json`` and a Markdown table of them."""
from __future__ import annotations

from pathlib import Path

from rclib import cost
from rclib.outputs import write_report
from rclib.speed.e2e import RELEASED_WAY
from rclib.speed.machine import machine_name
from rclib.speed.step import LAUNCH_WIDTH

# the issues' targets per model shape: summary quantity -> (comparison, bound); measured at B = 1 (memory at
# memory_batch)
TARGETS = {
    "llava-1.5": {
        "compress_rc_over_fastervlm": ("<=", 3.0),  # rc's compression step at most 3x FasterVLM's, one thread
        "peak_extra_mib_rc": ("<", 100e6 / 2**20),  # under 100 MB extra at B = 64
        "speedup_vs_released_compress": (">=", 50.0),  # RC's work at least 50x faster than the released way
        "bound_share_rc": (">=", 0.9),  # rc's total within 10% of the best any compressor with its K could reach
        "compress_share_of_vision_rc": ("<=", 0.05),  # the compression step at most 5% of the vision tower's time
    },
    "llava-next": {  # at N = 2,880
        "compress_rc_over_fastervlm": ("<=", 3.0),  # rc's step at most 3x a top-k over the same scores, one thread
        "compress_share_of_vision_rc": ("<=", 0.05),  # at most 5% of the vision tower's time on its 5 crops
        "peak_extra_mib_rc": ("<", 200e6 / 2**20),  # under 200 MB extra at B = 16
    },
}
COMPARE = {"<=": float.__le__, "<": float.__lt__, ">=": float.__ge__}


def summary(results: dict, rc_e2e: dict) -> dict:
    """The headline numbers (B = 1) and whether each target is met."""
    compress_ms = {row["method"]: row["ms"] for row in results["compress"]}
    full_e2e = next(row for row in results["e2e"] if row["method"] == "full")
    released_row = next((row for row in results["e2e"] if row["method"] == RELEASED_WAY), None)
    has_fastervlm = "fastervlm" in compress_ms
    out = {
        "compress_ms_rc": compress_ms["rc"],
        "compress_ms_fastervlm": compress_ms["fastervlm"] if has_fastervlm else None,
        "compress_rc_over_fastervlm": compress_ms["rc"] / compress_ms["fastervlm"] if has_fastervlm else None,
        "peak_extra_mib_rc": next(row["peak_extra_mib"] for row in results["compress"] if row["method"] == "rc"),
        "memory_batch": results["config"]["memory_batch"],
        "bound_share_rc": rc_e2e["bound_share"],
        "compress_share_of_vision_rc": rc_e2e["compress_share_of_vision"],
        "speedup_vs_released_compress": results["released"].get("speedup"),
        "speedup_vs_released_without_second_forward": results["released"].get("speedup_without_second_forward"),
        "speedup_vs_released_total": released_row["total_s"] / rc_e2e["total_s"] if released_row else None,
        "total_s_full": full_e2e["total_s"], "total_s_rc": rc_e2e["total_s"],
        "speedup_rc_vs_full_total": full_e2e["total_s"] / rc_e2e["total_s"],
        "tokens_rc": rc_e2e["tokens"],
    }
    out["targets_met"] = {name: out[name] is not None and COMPARE[op](float(out[name]), bound)
                          for name, (op, bound) in targets(results).items()}
    return out


def targets(results: dict) -> dict[str, tuple[str, float]]:
    """The targets of the results' model shape."""
    return TARGETS[results["config"]["model_shape"]]


def table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table, numbers through :func:`fmt`."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(fmt(value) for value in row) + " |" for row in rows])


def markdown(results: dict) -> str:
    """The tables of a results dict, as Markdown."""
    m, s, config, goals = results["machine"], results["summary"], results["config"], targets(results)
    lm = "toy (--quick)" if config["quick"] else config["lm"]
    n, width = config["shapes"]["n_tokens"], config["shapes"]["vision_width"]
    lines = [f"# rclib speed on {m['device'] if m['device'] != 'cpu' else m['cpu']}", "",
             f"{m['cores']} cores, {m['memory_gib']} GiB; torch {m['torch']}, transformers {m['transformers']}, "
             f"{config['dtype']}; {m['date']}; load average before {m['load_average_1_5_15']}, after "
             f"{m['load_average_after']}. Times on the {config['clock']} clock; end to end on {m['e2e_threads']} "
             f"thread(s), {config['model_shape']} shapes (N = {n} image tokens), LLM {lm}, "
             f"{config['new_tokens']} new tokens, median of {config['repeats']} runs after a warm-up.", "",
             "## Summary (B = 1)", ""]
    lines += table(["quantity", "value", "target", "met"],
                   [[name, value, " ".join(map(fmt, goals[name])) if name in goals else "",
                     s["targets_met"].get(name, "")] for name, value in s.items() if name != "targets_met"])
    lines += ["", f"## Compression step (N = {n}, C = {width}, one thread)", ""]
    lines += table(["method", "ms (B = 1, median)", "ms (min)", "tokens", f"extra MiB at B = {config['memory_batch']}",
                    "GPU kernels"],
                   [[r["method"], r["ms"], r["ms_min"], r["tokens"], r["peak_extra_mib"],
                     "-" if r["kernel_launches"] is None else r["kernel_launches"]] for r in results["compress"]])
    lines += ["", "Filters alone (median, min): "
              + ", ".join(f"{r['filter']} {fmt(r['ms'])}, {fmt(r['ms_min'])} ms" for r in results["filters"]) + "."]
    lines += [f"Not run at N = {n}: {method} ({why})." for method, why in results["refused"].items()]
    lines += ["", f"## Kernel launches: aten ops / host syncs per compress call (C = {LAUNCH_WIDTH})", ""]
    sizes = list(dict.fromkeys((r["batch"], r["n_tokens"]) for r in results.get("launches", [])))
    cells = {(r["method"], r["budget"], r["checks"], r["batch"], r["n_tokens"]): f"{r['aten_ops']} / {r['host_syncs']}"
             for r in results.get("launches", [])}
    lines += table(["method", "budget", "checks"] + [f"B = {b}, N = {n}" for b, n in sizes],
                   [[*key, *(cells[(*key, *size)] for size in sizes)]
                    for key in dict.fromkeys(k[:3] for k in cells)])
    lines += ["", f"## End to end, B = 1, N = {n} (seconds)", ""]
    lines += table(["method", "tokens", "vision", "text", "compress", "prefill", "decode tok/s", "total", "bound",
                    "bound share"],
                   [[r["method"], r["tokens"], r["vision_s"], r["text_s"], r["compress_s"], r["prefill_s"],
                     r["decode_tokens_per_s"], r["total_s"], r["bound_s"], r["bound_share"]] for r in results["e2e"]])
    released = results["released"]
    if "speedup" in released:
        lines += ["", f"RC's work after the shared vision forward (B = 1): rclib {fmt(1e3 * released['rclib_s'])} ms, "
                  f"the released way {fmt(1e3 * released['released_s'])} ms ({fmt(released['speedup'])}x): its second "
                  f"vision forward {fmt(1e3 * released['released_second_forward_s'])} ms, then its scores, filters and "
                  f"loop {fmt(1e3 * released['released_rest_s'])} ms "
                  f"({fmt(released['speedup_without_second_forward'])}x rclib's)."]
    else:
        lines += ["", f"The released code's way of doing RC's work: {released['skipped']}."]
    lines += ["", "## Batch scaling", ""]
    lines += table(["method", "batch", "images/s", "total s", "tokens per sample"],
                   [[r["method"], r["batch"], r["images_per_s"], r["total_s"], r["tokens_per_sample"]]
                    for r in results["batch"]])
    lines += ["", f"## Analytic prefill cost ({cost.LLAVA_TEXT_TOKENS} text tokens, fp16)", ""]
    lines += table(["model", "setting", "prunes", "mean image tokens", "TFLOPs", "KV cache MiB", "activations GiB"],
                   [[r["model"], r["setting"], r["prunes"], r["mean_image_tokens"], r["TFLOPs"], r["KV cache (MiB)"],
                     r["activations (GiB)"]] for r in results["cost"]["rows"]])
    lines += [""] + table(["FLOPs: formula vs FlopCounterMode", "tokens", "formula TFLOPs", "counted TFLOPs", "ratio"],
                          [[r["model"], r["tokens"], r["formula_tflops"], r["flop_counter_tflops"], r["ratio"]]
                           for r in results["cost"]["flop_check"]])
    if results["filter_agreement"]:
        lines += ["", "## LOF count agreement with scikit-learn", ""]
        lines += table(["scores", "dtype", "same count", "mean abs diff", "max"],
                       [[r["scores"], r["dtype"], f"{r['same_count']:.1%}", r["mean_abs_diff"], r["max_abs_diff"]]
                        for r in results["filter_agreement"]])
    return "\n".join(lines) + "\n"


def fmt(value) -> str:
    """A float with three significant figures; anything else as str() writes it."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_results(results: dict, out: Path) -> tuple[Path, Path]:
    """``speed-<machine>.json`` and ``.md`` under ``out``, the stem followed by the model shape (LLaVA-1.5's
    none), ``-cpu-clock`` and ``-quick`` where they apply."""
    config = results["config"]
    stem = ("speed-" + machine_name(results["machine"])
            + ("" if config["model_shape"] == "llava-1.5" else "-" + config["model_shape"])
            + ("-cpu-clock" if config["clock"] == "cpu" else "") + ("-quick" if config["quick"] else ""))
    return write_report(out / stem, results, markdown(results))
