"""Compression as a GPU sees it: aten ops (about one kernel launch each) and host syncs per compress call, the
same at B = 1 and 16 and at N = 576 and 2,880; fixed budgets capturable whole by torch.compile."""
import pytest
import torch

from rclib import compress
from rclib.launches import count_ops
from rclib.speed import LAUNCH_WIDTH, launch_rows, llava_like_inputs

SIZES = ((1, 576), (16, 576), (1, 2880))  # (B, N); B = 16 at N = 2,880 runs in rclib speed (GBs of N x N)
CHECK_OPS = 7  # the value checks: one float32 sum per input (4 here), their stack, its sum, one read (the host sync)
# (method, budget) -> the most aten ops of one call with the value checks on (measured + a margin of a few).
# Originally 98, 226, 495, 175, 875 and 2,547 ops and 6 to 9 host syncs; then 28, 147, 419, 107, 294 and 1,027
# (checks of 9 ops); now 26, 98, 140, 74, 291 and 519: RC's stage picks and merge (one scatter of entries, fates and
# slot kinds by masked fills), its adaptive counts chosen on the host (the LOF in numpy, 265 ops before), VisionZip's
# grouping with fewer launches and CDPruner's greedy steps of 7 ops (the conditioned kernel; 15 before)
MOST_OPS = {("fastervlm", 64): 28, ("rc", 64): 100, ("rc", "adaptive"): 150, ("visionzip", 64): 78,
            ("divprune", 64): 4 * 64 + 40, ("cdpruner", 64): 8 * 64 + 60}
NO_SYNC = ("fastervlm", "rc", "visionzip", "divprune", "cdpruner", "random", "pool")  # fixed budget, checks off


@pytest.fixture(scope="module")
def rows():
    return launch_rows(tuple(dict.fromkeys([*(name for name, _ in MOST_OPS), *NO_SYNC])), SIZES)


def test_counts_do_not_grow_with_the_batch_or_the_grid(rows):
    for (method, budget), most in MOST_OPS.items():
        mine = [r for r in rows if r["method"] == method and r["budget"] == budget]
        assert len(mine) == 2 * len(SIZES)
        ops = {r["aten_ops"] for r in mine if r["checks"]}
        assert max(ops) <= most and max(ops) - min(ops) <= 4, f"{method} @ {budget}: {sorted(ops)} ops"
        assert all(r["aten_ops"] == [s for s in mine if s["checks"] and s["batch"] == r["batch"]
                                     and s["n_tokens"] == r["n_tokens"]][0]["aten_ops"] - CHECK_OPS
                   for r in mine if not r["checks"]), f"{method}: the checks are not {CHECK_OPS} ops"


def test_host_syncs(rows):
    for r in rows:
        checks = int(r["checks"])
        if r["budget"] == "adaptive":
            assert r["host_syncs"] == checks + 1, r  # rc: one read of its scores, the stages chosen on the host
        elif r["method"] in NO_SYNC:
            assert r["host_syncs"] == checks, r


def test_a_copy_to_the_host_is_a_sync_and_a_cast_is_not():
    x = torch.rand(2, 8, dtype=torch.float64)
    assert count_ops(lambda: x.to("cpu", copy=True))[1].syncs == 1  # on a GPU tensor: the host waits for it
    assert count_ops(lambda: torch.nanquantile(x, torch.tensor([0.25, 0.75], dtype=x.dtype), dim=1))[1].syncs == 0
    assert count_ops(lambda: x.to(torch.float32))[1].syncs == 0


def test_checks_off_skip_only_the_value_scan():
    tokens, a, s, keys = llava_like_inputs(2, 64, LAUNCH_WIDTH)
    tokens[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"tokens contain NaN or inf in batch rows \[1\]"):
        compress(tokens, a, s, keys, method="fastervlm", budget=8)
    result, counted = count_ops(compress, tokens, a, s, keys, method="fastervlm", budget=8, check_values=False)
    assert counted.syncs == 0 and result.n_output.tolist() == [8, 8]
    with pytest.raises(ValueError, match="cls_attn must be"):
        compress(tokens, a[:, :10], s, keys, method="fastervlm", check_values=False)


@pytest.mark.parametrize("method", ["fastervlm", "rc", "visionzip", "divprune", "cdpruner", "pool", "vispruner",
                                    "prumerge", "prumerge+", "tome"])
def test_fixed_budgets_compile_as_one_graph(method):
    """fullgraph=True fails on any graph break (a host sync, Python reading a tensor); the eager backend keeps it
    quick. What a CUDA graph or mode="reduce-overhead" captures, and the same result."""
    tokens, a, s, keys = llava_like_inputs(2, 64, 16)
    torch._dynamo.reset()
    compiled = torch.compile(lambda *x: compress(*x, method=method, budget=8, check_values=False), fullgraph=True,
                             backend="eager")
    got, want = compiled(tokens, a, s, keys), compress(tokens, a, s, keys, method=method, budget=8)
    for name in ("tokens", "weights", "fate", "slot", "mask"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
