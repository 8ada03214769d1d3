"""The tensor API: every bad input is a ValueError that names it; any input gives a valid result or a ValueError."""
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import rclib
from rclib import Fate, Slot, compress
from rclib.result import CompressionResult

ALL = sorted(rclib.METHODS)


def inputs(B=2, N=9, C=4, Ck=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, N, C, generator=g), torch.rand(B, N, generator=g).softmax(1),
            torch.randn(B, N, generator=g) * 0.1, torch.randn(B, N, Ck, generator=g))


# NaN or inf is checked in tokens and keys too, not only in the score tensors.
@pytest.mark.parametrize("name, index", [("tokens", 0), ("keys", 3)])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_in_tokens_or_keys_is_named_with_its_row(name, index, bad):
    args = list(inputs())
    args[index] = args[index].clone()
    args[index][1, 4, 0] = bad
    with pytest.raises(ValueError, match=rf"^{name} contain NaN or inf in batch rows \[1\]"):
        compress(*args, method="rc")


# N = 0 is refused by name, not a raw torch error.
def test_no_tokens_is_refused():
    tokens, a, s, keys = inputs(N=0)
    with pytest.raises(ValueError, match=r"at least one token of at least one channel, got shape \(2, 0, 4\)"):
        compress(tokens, a, s, keys, method="rc")


# Meta tensors are refused by name, not a raw torch error.
def test_meta_tensors_are_refused():
    tokens, a, s, keys = inputs()
    with pytest.raises(ValueError, match="tokens is a meta tensor"):
        compress(tokens.to("meta"), a, s, keys, method="fastervlm")
    with pytest.raises(ValueError, match="cls_attn is a meta tensor"):
        compress(tokens, a.to("meta"), s, keys, method="fastervlm")


# NumPy arrays are refused, naming the conversion.
def test_numpy_arrays_are_refused_with_the_conversion():
    tokens, a, s, keys = inputs()
    with pytest.raises(ValueError, match=r"tokens must be a torch.Tensor, got ndarray: convert it with torch.from_num"):
        compress(tokens.numpy(), a, s, keys, method="rc")
    with pytest.raises(ValueError, match=r"keys must be a torch.Tensor, got ndarray"):
        compress(tokens, a, s, keys.numpy(), method="rc")


# A per-sample budget tensor is refused by name; a scalar tensor is taken as the budget.
def test_per_sample_budget_tensor_is_refused_and_a_scalar_one_is_taken():
    tokens, a, s, keys = inputs()
    with pytest.raises(ValueError, match=r"one whole number .* shape \(2,\); for a budget per sample"):
        compress(tokens, a, s, keys, method="fastervlm", budget=torch.tensor([3, 4]))
    assert compress(tokens, a, s, keys, method="fastervlm", budget=torch.tensor(3)).n_output.tolist() == [3, 3]
    assert compress(tokens, a, s, keys, method="fastervlm", budget=np.int64(2)).n_output.tolist() == [2, 2]


@pytest.mark.parametrize("budget, message", [(0, "positive"), (-3, "positive"), (2.5, "whole number"),
                                             (True, "whole number"), ("8", "whole number")])
def test_bad_budgets_are_refused(budget, message):
    with pytest.raises(ValueError, match=message):
        compress(*inputs(), method="fastervlm", budget=budget)


# Every method before the LLM (DivPrune too) gives an empty result for an empty batch.
@pytest.mark.parametrize("method", [m for m in ALL if rclib.METHODS[m].placement == "before_llm"])
def test_empty_batch_gives_an_empty_result(method):
    tokens, a, s, keys = inputs(B=0)
    truth = {"target": torch.zeros(0, 9, dtype=torch.bool)} if "target" in rclib.METHODS[method].needs else {}
    r = compress(tokens, a, s, keys, method=method, budget=4, **truth)  # K: 0, or the count known on the host (K, N)
    assert r.tokens.shape[::2] == (0, 4) and r.tokens.shape[1] in (0, 4, 9) and r.fate.shape == (0, 9) and len(r) == 0


def test_other_devices_dtypes_and_shapes_are_named():
    tokens, a, s, keys = inputs()
    with pytest.raises(ValueError, match=r"text_sim must be floating point .* got torch.int64"):
        compress(tokens, a, s.long(), keys, method="rc")
    with pytest.raises(ValueError, match=r"keys must be \[B, N, Ck\] with \[B, N\] = \[2, 9\] as in tokens, got"):
        compress(tokens, a, s, keys[:, :8], method="rc")
    with pytest.raises(ValueError, match=r"cls_attn must be \[B, N\], got shape \(2, 9, 1\)"):
        compress(tokens, a[..., None], s, keys, method="rc")
    with pytest.raises(ValueError, match="keys must have at least one channel"):
        compress(tokens, a, s, keys[..., :0], method="rc")
    from rclib.methods.checks import check_tensor

    with pytest.raises(ValueError, match="cls_attn is on cpu but tokens are on cuda:0: move all inputs to one device"):
        check_tensor(a, "cls_attn", 2, torch.device("cuda:0"))


def test_what_a_method_needs_and_its_options_are_named():
    tokens, a, s, keys = inputs()
    with pytest.raises(ValueError, match="method 'rc' needs keys"):
        compress(tokens, a, s, None, method="rc")
    with pytest.raises(ValueError, match=r"method 'rc' needs text_sim, .* \(or pass text_stage=False\)"):
        compress(tokens, a, None, keys, method="rc")
    assert len(compress(tokens, a, None, keys, method="rc", text_stage=False)) == 2
    with pytest.raises(ValueError, match=r"method 'visionzip' takes no option 'knn_k'; its options: no"):
        compress(tokens, a, s, keys, method="visionzip", knn_k=3)
    with pytest.raises(ValueError, match=r"method 'rc' takes no option 'bogus'; its options: preset, rule"):
        compress(tokens, a, s, keys, method="rc", bogus=1)
    with pytest.raises(ValueError, match="pool needs a square patch grid, got N = 10 tokens"):
        compress(*inputs(N=10), method="pool")
    assert compress(tokens, None, None, None, method="pool", budget=4).n_output.tolist() == [4, 4]


# --- the property: any input gives a valid result or a ValueError --------------------------------------------------

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool]
TOLERANCE = {torch.float16: 3e-2, torch.bfloat16: 6e-2, torch.float32: 1e-5, torch.float64: 1e-10}


def check_valid(r: CompressionResult, tokens: torch.Tensor, method: str, budget) -> None:
    """What every result promises: shapes, a prefix mask, fates and slots of the right kinds, true provenance."""
    B, N, C = tokens.shape
    K = r.weights.shape[1]
    assert isinstance(r, CompressionResult) and len(r) == B and r.n_input == N and r.method == method
    assert r.tokens.shape == (B, K, C) and r.tokens.dtype == tokens.dtype and r.fate.shape == (B, N)
    assert bool((r.mask == (torch.arange(K) < r.n_output[:, None])).all()), "real slots must be a prefix"
    assert bool((r.slot[~r.mask] == Slot.PAD).all()) and bool((r.slot[r.mask] != Slot.PAD).all())
    assert set(r.fate.unique().tolist()) <= {int(f) for f in Fate}
    assert bool((r.weights[~r.mask] == 0).all()) and bool((r.weights >= 0).all())
    assert bool(((r.weights != 0).any(1) <= (r.fate != Fate.DROPPED)).all()), "a dropped token feeds nothing"
    if B:
        assert bool((r.n_output >= 1).all()), "every sample keeps at least one token"
    if budget is not None and method != "full":
        assert bool((r.n_output <= budget).all()), f"budget {budget} exceeded: {r.n_output.tolist()}"
    expected = r.weights.double() @ tokens.double()  # [B, K, C]
    scale = r.weights.double() @ tokens.double().abs() + 1
    assert bool(((r.tokens.double() - expected).abs() <= TOLERANCE[tokens.dtype] * scale).all()), \
        "tokens must equal weights @ inputs"


def rarely(draw, strategy, otherwise):
    """A draw from ``strategy`` one time in eight, else ``otherwise``: most calls stay valid enough to run."""
    return draw(strategy) if draw(st.sampled_from([False] * 7 + [True])) else otherwise


@st.composite
def calls(draw):
    """A compress call with random method, shapes, dtypes, values, missing inputs, budget and now and then a
    bad value (NaN, inf, an empty dimension, an integer dtype, a bad budget, a missing input)."""
    method = draw(st.sampled_from(ALL))
    B, N = draw(st.integers(0, 3)), draw(st.integers(1, 30))
    if method == "pool" and draw(st.booleans()):
        N = draw(st.sampled_from([1, 4, 9, 16, 25]))
    N, C = rarely(draw, st.sampled_from([(0, 4), (N, 0)]), (N, draw(st.integers(1, 6))))
    Ck = draw(st.integers(1, 5))
    dtype = rarely(draw, st.sampled_from([torch.int64, torch.bool]),
                   draw(st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64])))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    big = 30.0 if dtype in (torch.float16, torch.bfloat16) else draw(st.sampled_from([1e-3, 1.0, 1e3]))
    tensors = {"tokens": torch.randn(B, N, C, generator=g, dtype=torch.float64) * big,
               "cls_attn": torch.rand(B, N, generator=g, dtype=torch.float64),
               "text_sim": torch.rand(B, N, generator=g, dtype=torch.float64) * 2 - 1,
               "keys": torch.randn(B, N, Ck, generator=g, dtype=torch.float64) * big}
    if draw(st.booleans()):  # ties: scores quantised to a few values, as half-precision attention is
        tensors["cls_attn"] = (tensors["cls_attn"] * 4).round() / 4
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    for name in ("cls_attn", "text_sim", "keys"):
        tensors[name] = rarely(draw, st.none(), tensors[name])
    poisoned = None
    present = [k for k, v in tensors.items() if v is not None and v.numel()]
    if dtype.is_floating_point and present and draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from(present))
        flat = tensors[name].flatten().clone()
        flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from([float("nan"), float("inf"),
                                                                             float("-inf")]))
        tensors[name], poisoned = flat.view_as(tensors[name]), name
    budget = draw(st.one_of(st.none(), st.integers(1, 40)))
    budget = rarely(draw, st.one_of(st.integers(-2, 0), st.sampled_from([0.5, 3.0, "4"]),
                                    st.builds(torch.tensor, st.integers(1, 9)),
                                    st.builds(lambda n: torch.full((max(B, 1),), n), st.integers(1, 9))), budget)
    return method, tensors, budget, poisoned


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=calls())
def test_any_input_gives_a_valid_result_or_a_value_error(call):
    method, tensors, budget, poisoned = call
    try:
        r = compress(tensors["tokens"], tensors["cls_attn"], tensors["text_sim"], tensors["keys"], method=method,
                     budget=budget)
    except ValueError as error:
        event(f"ValueError: {str(error).split(',')[0][:40]}")
        return
    event(f"valid {method}")
    assert poisoned is None, f"NaN or inf in {poisoned} passed unchecked"
    check_valid(r, tensors["tokens"], method, None if budget is None else int(budget))


@pytest.mark.parametrize("method", ["prumerge", "prumerge+"])
def test_float16_merges_that_overflow_are_refused_not_returned_as_inf(method):
    """Finite float16 features near 6e4: a centre plus its neighbours sums past 65504. The merge is refused with the
    fix; with the checks off (a trusted hot path) the caller gets what float16 holds; methods that do not sum pass."""
    from rclib.speed import llava_like_inputs

    tokens, a, s, keys = (x.half() for x in llava_like_inputs(1, 576, 16))
    tokens = tokens.sign() * 6e4
    with pytest.raises(ValueError, match=f"{re.escape(method)}'s output tokens overflow float16 .* float32 or bfloat16"):
        compress(tokens, a, s, keys, method=method, budget=64)
    assert not torch.isfinite(compress(tokens, a, s, keys, method=method, budget=64, check_values=False).tokens).all()
    assert torch.isfinite(compress(tokens, a, s, keys, method="visionzip", budget=64).tokens).all()
