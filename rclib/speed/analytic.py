"""The analytic rows of ``rclib speed`` (:mod:`rclib.cost`): the prefill cost of the 7B and 13B models per method
and K, at the measured model's image tokens, the FLOP formula against torch's count, and the paper's cost claims
against the formulas."""
from __future__ import annotations

from rclib import cost
from rclib.methods.sparsevlm import RELEASED_COUNTS
from rclib.speed.config import ModelShapes

COST_BUDGETS = (64, 128, 192)  # the usual fixed-token settings of the field


def prunes_inside(schedule: cost.Schedule) -> str:
    """Where a schedule of an inside-LLM method prunes, e.g. "inside: all tokens in layers 0-1"."""
    first, *later = [layer for layer, _ in schedule[1:]]
    again = f", pruned again before layers {', '.join(map(str, later))}" if later else ""
    return f"inside: all tokens in layers 0-{first - 1}{again}"


def inside_settings(method: str, schedules: dict[int, cost.Schedule]) -> list[tuple]:
    """(setting, where it prunes, schedule) of an inside-LLM method at each budget."""
    return [(f"{method} at {k}", prunes_inside(schedule), schedule) for k, schedule in schedules.items()]


def cost_rows(rc_tokens: float, n_image: int = cost.LLAVA_IMAGE_TOKENS, model: str = "llava-1.5") -> list[dict]:
    """Prefill cost of ``model``-7B and 13B (Vicuna) with ``n_image`` image tokens: all tokens, compression before
    the LLM at each K (every rclib method, rc at its measured mean K too), and the methods that prune inside the
    LLM (their own plans)."""
    rows = []
    for arch_name in ("7b", "13b"):
        arch = cost.ARCHS[arch_name]
        settings = [("full", "all tokens", n_image), ("rc (adaptive)", "before the LLM", round(rc_tokens))]
        settings += [(f"any method at {k}", "before the LLM", k) for k in COST_BUDGETS]
        settings += inside_settings("fastv", {k: cost.method_schedule("fastv", k, arch, n_image) for k in COST_BUDGETS})
        if arch_name == "7b":  # SparseVLM's counts are written for LLaVA-1.5-7B's 32 layers
            settings += inside_settings("sparsevlm", {k: cost.method_schedule("sparsevlm", k, arch, n_image)
                                                      for k in RELEASED_COUNTS})
        for name, where, tokens in settings:
            rows.append({"model": f"{model}-{arch_name}", "setting": name, "prunes": where,
                         **cost.cost_row(tokens, arch=arch)})
    return rows


def flop_check_rows(shapes: ModelShapes) -> list[dict]:
    """The prefill FLOP formula against torch's FlopCounterMode (meta device) at all and at 64 image tokens."""
    rows = []
    for name, arch in (("measured model's LLM", shapes.lm), ("llava-1.5-7b", cost.VICUNA_7B),
                       ("llava-1.5-13b", cost.VICUNA_13B)):
        for image_tokens in (cost.LLAVA_IMAGE_TOKENS, 64):
            n = image_tokens + cost.LLAVA_TEXT_TOKENS
            counted, formula = cost.counted_prefill_flops(arch, n), cost.prefill_flops(n, arch)
            rows.append({"model": name, "tokens": n, "formula_tflops": formula / 1e12,
                         "flop_counter_tflops": counted / 1e12, "ratio": counted / formula})
    return rows


def paper_check() -> dict:
    """The paper's cost claims (LLaVA-1.5-7B, A100, FP16) against the formulas at 576 and 58 image tokens."""
    full, rc = cost.cost_row(576), cost.cost_row(58)
    a100 = {"peak_flops": 312e12, "bandwidth": 2.0e12}  # A100 80 GB: dense FP16 tensor cores, HBM bandwidth
    roofline = {k: 1e3 * cost.roofline_seconds(cost.prefill_flops(k + cost.LLAVA_TEXT_TOKENS), cost.weight_bytes(),
                                               **a100) for k in (576, 58)}
    return {
        "paper": {"tflops": [8.5, 1.5], "prefill_ms_a100": [30.3, 9.2], "activations_gb": [4.1, 0.49],
                  "total_memory_gb": [22.2, 14.4]},
        "formula": {"tflops": [full["TFLOPs"], rc["TFLOPs"]],
                    "activations_gb": [full["activations (GiB)"] * 2**30 / 1e9, rc["activations (GiB)"] * 2**30 / 1e9],
                    "weights_kv_activations_gb": [full["weights + KV + activations (GiB)"] * 2**30 / 1e9,
                                                  rc["weights + KV + activations (GiB)"] * 2**30 / 1e9],
                    "roofline_prefill_ms_a100": [roofline[576], roofline[58]]},
        "assumptions": f"{cost.LLAVA_TEXT_TOKENS} text tokens; A100 80 GB at 312 TFLOP/s and 2.0 TB/s; "
                       "the prefill reads every weight once",
    }
