"""Checks of what a caller hands the compression methods: a ValueError that says what to fix, before any work.

:func:`check_inputs` looks at every tensor (type, device, dtype, shape, empty dimensions, NaN or inf
anywhere), at what the method needs, at its options (names, and the kind of value each takes; their ranges
are the method's config's to check, e.g. :class:`~rclib.methods.rc.RCConfig`) and at the budget. A batch of B = 0 samples is
valid (the result is empty); N = 0 tokens or C = 0 channels is not.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from rclib.filters import check_scores

SCORES = ("cls_attn", "text_sim")  # [B, N] per-token scores
WHAT = {"cls_attn": "the [CLS] attention over the patches [B, N]",
        "text_sim": "the question-to-patch similarity [B, N]",
        "keys": "the last vision layer's keys [B, N, Ck]",
        "target": "the asked-about objects' patches [B, N] bool as the option target= (a benchmark's ground truth)"}
FIX = "pass the encoders' outputs (rclib.models.CompressedModel.encode gives them all)"
OPTION_RANGES = {  # option -> (least, most or None) of the methods that take it
    "n_neighbors": (1, None), "centre_neighbors": (1, None), "knn_k": (1, None), "text_dim": (1, None),
    "step": (1, None), "uniform_per_centre": (0, None), "iqr_factor": (0, None), "important_share": (0, 1)}


def check_tensor(value, name: str, dims: int, device: torch.device | None) -> None:
    """``value`` is a floating-point torch tensor with ``dims`` dimensions on ``device`` (its values: see
    :func:`check_finite`)."""
    if not isinstance(value, torch.Tensor):
        fix = "convert it with torch.from_numpy(...)" if type(value).__module__ == "numpy" else "pass a torch tensor"
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}: {fix}")
    if value.is_meta:
        raise ValueError(f"{name} is a meta tensor (a shape without data): pass a tensor that holds values")
    if device is not None and value.device != device:
        raise ValueError(f"{name} is on {value.device} but tokens are on {device}: move all inputs to one device")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be floating point (float16, bfloat16, float32 or float64), got {value.dtype}")
    if value.dim() != dims:
        shape = "[B, N]" if dims == 2 else "[B, N, C]"
        raise ValueError(f"{name} must be {shape}, got shape {tuple(value.shape)}")


def check_output_range(method: str, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
    """Raise a ValueError when float16 ``outputs`` of finite float16 ``inputs`` overflow (one host sync, float16
    only): a merge sums tokens, and sums of features near float16's limit (65504) pass it."""
    if inputs.dtype == torch.float16 and not bool(torch.isfinite(outputs).all()):
        raise ValueError(f"{method}'s output tokens overflow float16 (beyond +-65504) although its inputs are finite: "
                         "its merges sum tokens near float16's limit; compress in float32 or bfloat16 (rclib.load(..., "
                         "dtype=torch.bfloat16) for a model)")


def check_finite(tensors: dict[str, torch.Tensor]) -> None:
    """Raise a ValueError naming the first of ``tensors`` (name -> [B, ...]) holding NaN or inf, and its rows.

    One host sync: the float32 sums of all of them (no float64 copy of a large input) are added up on the device
    and read once (NaN and inf survive a sum). Only when that total is not finite (a NaN or inf, or a finite sum
    past float32's range) are the tensors looked at one by one, exactly.
    """
    if not tensors:
        return
    if math.isfinite(torch.stack([value.sum(dtype=torch.float32) for value in tensors.values()]).sum().item()):
        return
    for name, value in tensors.items():
        check_scores(value.flatten(1), name=name)  # NaN or inf anywhere, with the rows


def check_budget(budget) -> int | None:
    """None, or a whole number >= 1 (a Python or numpy integer, or a one-element integer tensor) as an int."""
    if budget is None:
        return None
    if isinstance(budget, torch.Tensor):
        if budget.numel() != 1 or budget.is_floating_point() or budget.dtype == torch.bool:
            raise ValueError(f"budget must be one whole number of output tokens, got a {budget.dtype} tensor of shape "
                             f"{tuple(budget.shape)}; for a budget per sample, compress each sample on its own")
        budget = budget.item()
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise ValueError(f"budget must be a whole number of output tokens or None (adaptive), got {budget!r}")
    if budget < 1:
        raise ValueError(f"budget must be a positive number of output tokens, got {budget}")
    return int(budget)


def check_option_types(spec, options: dict) -> None:
    """Each option given is of the kind its default is: True / False for a switch, a whole number for a count, a
    finite number for a share or factor, text for a choice (options defaulting to None are the method's to check)."""
    for name, value in options.items():
        default = spec.options.get(name)
        if default is None:
            continue
        if isinstance(default, bool):
            ok, kind = isinstance(value, (bool, np.bool_)), "True or False"
        elif isinstance(default, numbers.Integral):
            ok, kind = not isinstance(value, bool) and isinstance(value, numbers.Integral), "a whole number"
        elif isinstance(default, numbers.Real):
            ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
            kind = "a finite number"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "text"
        else:
            continue
        least, most = OPTION_RANGES.get(name, (None, None))
        if least is not None:
            kind += f" from {least} to {most}" if most is not None else f" >= {least}"
        if ok and least is not None:
            ok = least <= value and (most is None or value <= most)
        if not ok:
            raise ValueError(f"method {spec.name!r}: option {name} must be {kind} (default {default!r}), got "
                             f"{type(value).__name__} {value!r}")


def needed_inputs(spec, options: dict) -> list[str]:
    """The inputs a call of ``spec`` reads: its ``needs``, and text_sim where a text stage is on (rc's
    ``text_stage`` option, on by default)."""
    text_stage = "text_stage" in spec.options and options.get("text_stage", spec.options["text_stage"])
    return [*spec.needs, "text_sim"] if text_stage and "text_sim" not in spec.needs else list(spec.needs)


def check_inputs(spec, tokens, cls_attn, text_sim, keys, budget, options: dict,
                 check_values: bool = True) -> int | None:
    """Raise a ValueError naming the first problem with a call of the method ``spec`` (a
    :class:`~rclib.methods.registry.MethodSpec`); return the budget as an int (or None).

    check_values: False skips :func:`check_finite`, the one check that reads the values (and the device).
    """
    spec.check_options(options)
    check_option_types(spec, options)
    check_tensor(tokens, "tokens", 3, None)
    B, N, C = tokens.shape
    if N == 0 or C == 0:
        raise ValueError(f"tokens must have at least one token of at least one channel, got shape {(B, N, C)}")
    given = {"cls_attn": cls_attn, "text_sim": text_sim, "keys": keys}
    for name, value in given.items():
        if value is None:
            continue
        check_tensor(value, name, 2 if name in SCORES else 3, tokens.device)
        if value.shape[:2] != (B, N):
            layout = "[B, N]" if name in SCORES else "[B, N, Ck]"
            raise ValueError(f"{name} must be {layout} with [B, N] = {[B, N]} as in tokens, got {tuple(value.shape)}")
        if name == "keys" and value.shape[2] == 0:
            raise ValueError(f"keys must have at least one channel, got shape {tuple(value.shape)}")
    for name in needed_inputs(spec, options):
        if {**given, "target": options.get("target")}.get(name) is None:
            hint = " (or pass text_stage=False)" if name == "text_sim" and "text_stage" in spec.options else ""
            raise ValueError(f"method {spec.name!r} needs {name}, {WHAT.get(name, 'an input compress does not take')}"
                             f"{hint}: {FIX}")
    budget = check_budget(budget)
    if check_values:
        check_finite({"tokens": tokens, **{name: value for name, value in given.items() if value is not None}})
    return budget
