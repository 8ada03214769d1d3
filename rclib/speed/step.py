"""The compression step alone, on inputs shaped like the model's (LLaVA-1.5's 576 tokens, LLaVA-NeXT's 2,880): each
method's time, memory and GPU kernels, its aten ops and host syncs, the dynamic scale filter's time and its LOF count
against scikit-learn's; the methods that refuse the model's token count."""
from __future__ import annotations

import statistics
from functools import partial

import numpy as np
import torch

from rclib.filters import outlier_count
from rclib.launches import count_ops
from rclib.methods import METHODS, compress
from rclib.methods.common import ADAPTIVE
from rclib.methods.released_reference import sklearn_lof_count
from rclib.speed.config import SpeedConfig
from rclib.speed.instrument import kernel_launches, peak_extra_bytes, round_robin, torch_threads

LAUNCH_SIZES = ((1, 576), (16, 576), (1, 2880), (16, 2880))  # (B, N): LLaVA-1.5's grid, and 5x it
LAUNCH_WIDTH = 64  # channels: the counts do not depend on them, and the big sizes stay quick
# Score vectors like those the filter meets, drawn continuous, then rounded to a low-precision dtype
AGREEMENT_SCORES = {
    "cls-attention (softmax, N=576)": lambda rng: rng.dirichlet(np.full(576, 0.3)),
    "text cosine (N=576)": lambda rng: rng.normal(0.15, 0.05, 576),
    "cls-attention (N=144)": lambda rng: rng.dirichlet(np.full(144, 0.3)),
}


def llava_like_inputs(batch: int, n: int = 576, width: int = 1024, device="cpu", dtype=torch.float32, seed: int = 0):
    """(tokens [B, N, C], cls_attn [B, N], text_sim [B, N], keys [B, N, C]) shaped and spread like LLaVA-1.5's.

    The [CLS] attention is a peaked softmax (a few tokens take most of it), the text scores are small
    cosines; RC keeps about 9% of the tokens on them (the paper: ~10%).
    """
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, n, width, generator=g)
    cls_attn = torch.softmax(torch.randn(batch, n, generator=g) * 3, dim=1)
    text_sim = torch.randn(batch, n, generator=g) * 0.1
    keys = torch.randn(batch, n, width, generator=g)
    return tokens.to(device, dtype), cls_attn.to(device), text_sim.to(device), keys.to(device, dtype)


def before_llm(methods: tuple[str, ...]) -> list[str]:
    """The methods that compress before the LLM (the others prune inside it, while generating)."""
    return [m for m in methods if METHODS[m].placement == "before_llm"]


def refusal(call) -> str | None:
    """What ``call()`` says when it refuses its inputs with a ValueError (pool: N not a square); None once it ran."""
    try:
        call()
    except ValueError as error:
        return str(error)
    return None


def refused_methods(methods: tuple[str, ...], n: int) -> dict[str, str]:
    """The before-LLM methods among ``methods`` that refuse N = ``n`` tokens, and what each says."""
    inputs = llava_like_inputs(1, n, LAUNCH_WIDTH)
    said = {method: refusal(partial(compress, *inputs, method=method)) for method in before_llm(methods)}
    return {method: why for method, why in said.items() if why is not None}


def compress_rows(config: SpeedConfig) -> list[dict]:
    """Each method's compression step on the model's N tokens of its vision width: B = 1 on one thread (median of
    10 x repeats), memory at a large batch."""
    device, dtype, shapes = config.torch_device, config.torch_dtype, config.shapes
    one = llava_like_inputs(1, shapes.n_tokens, shapes.vision_width, device, dtype)
    many = llava_like_inputs(config.memory_batch, shapes.n_tokens, shapes.vision_width, device, dtype)
    calls = {method: (lambda inputs=one, method=method: compress(*inputs, method=method))
             for method in before_llm(config.methods)}
    rows = []
    with torch_threads(1):
        seconds = round_robin(calls, 10 * config.repeats, config.stopwatch)
        for method, call in calls.items():
            rows.append({
                "method": method, "batch": 1, "n_tokens": shapes.n_tokens, "threads": 1,
                "ms": 1e3 * statistics.median(seconds[method]), "ms_min": 1e3 * min(seconds[method]),
                "tokens": float(call().n_output.float().mean()),
                "kernel_launches": kernel_launches(call, device),
                "memory_batch": config.memory_batch,
                "peak_extra_mib": peak_extra_bytes(lambda: call(many), device) / 2**20,
            })
    return rows


def filter_rows(config: SpeedConfig) -> list[dict]:
    """The dynamic scale filter alone on the model's [CLS] attention over N tokens, B = 1, one thread."""
    shapes = config.shapes
    _, cls_attn, _, _ = llava_like_inputs(1, shapes.n_tokens, shapes.vision_width, config.torch_device)
    calls = {rule: (lambda rule=rule: outlier_count(cls_attn, rule, 20)) for rule in ("lof", "iqr")}
    with torch_threads(1):
        seconds = round_robin(calls, 10 * config.repeats, config.stopwatch)
    return [{"filter": rule, "batch": 1, "threads": 1, "ms": 1e3 * statistics.median(values),
             "ms_min": 1e3 * min(values)} for rule, values in seconds.items()]


def agreement_rows(config: SpeedConfig) -> list[dict]:
    """How often rclib's LOF keep-count equals scikit-learn's, by score kind and rounding dtype."""
    rows = []
    for name, draw in AGREEMENT_SCORES.items():
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            rng = np.random.default_rng(0)
            diffs = []
            for _ in range(config.agreement_rows):
                x = torch.tensor(draw(rng)).to(dtype).double()
                diffs.append(abs(int(outlier_count(x, "lof", 20)) - sklearn_lof_count(x.numpy(), 20)))
            diffs = np.array(diffs)
            rows.append({"scores": name, "dtype": str(dtype).removeprefix("torch."), "rows": len(diffs),
                         "same_count": float(np.mean(diffs == 0)), "mean_abs_diff": float(diffs.mean()),
                         "max_abs_diff": int(diffs.max())})
    return rows


def launch_rows(methods: tuple[str, ...], sizes=LAUNCH_SIZES, device="cpu") -> list[dict]:
    """Aten ops and host syncs of one ``compress`` call (:mod:`rclib.launches`) per method, size, budget (64, and
    adaptive for the methods that choose K) and with the value checks on and off; after one uncounted call."""
    rows = []
    for batch, n in sizes:
        inputs = llava_like_inputs(batch, n, LAUNCH_WIDTH, device=device)
        for method in before_llm(methods):
            spec = METHODS[method]
            budgets = (None,) if not spec.takes_budget else (64, None) if spec.adaptive else (64,)
            for budget in budgets:
                for checks in (True, False):
                    call = partial(compress, *inputs, method=method, budget=budget, check_values=checks)
                    if refusal(call) is not None:  # a method that refuses this grid (pool: not a square)
                        continue
                    counted = count_ops(call)[1]
                    rows.append({"method": method, "budget": ADAPTIVE if budget is None else budget, "batch": batch,
                                 "n_tokens": n, "checks": checks, "aten_ops": counted.total,
                                 "host_syncs": counted.syncs})
    return rows
