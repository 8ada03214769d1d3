"""VisPruner, PruMerge(+) and ToMe at a fixed budget: no host sync, one torch.compile graph. Adaptive PruMerge(+)
must read its counts on the host: how many centres and output slots depend on the scores."""
import pytest
import torch

from rclib import compress
from rclib.launches import count_ops
from rclib.speed import llava_like_inputs

FIXED = ("vispruner", "prumerge", "prumerge+", "tome")


@pytest.mark.parametrize("B, N", [(1, 576), (4, 576), (1, 2880)])
def test_fixed_budgets_do_not_sync(B, N):
    tokens, a, s, keys = llava_like_inputs(B, N, 16)
    for method in FIXED:
        result, counted = count_ops(compress, tokens, a, s, keys, method=method, budget=64, check_values=False)
        assert counted.syncs == 0 and result.n_output.tolist() == [64] * B, (method, dict(counted.ops))
    for method in ("prumerge", "prumerge+"):
        _, counted = count_ops(compress, tokens, a, s, keys, method=method, check_values=False)
        assert 1 <= counted.syncs <= 2, (method, dict(counted.ops))  # the centres and the slots, read apart or together


@pytest.mark.parametrize("method", FIXED)
def test_fixed_budgets_compile_as_one_graph(method):
    """fullgraph=True fails on any graph break (a host sync, Python reading a tensor); the eager backend keeps it
    quick."""
    tokens, a, s, keys = llava_like_inputs(2, 64, 16)
    torch._dynamo.reset()
    compiled = torch.compile(lambda *x: compress(*x, method=method, budget=8, check_values=False), fullgraph=True,
                             backend="eager")
    got, want = compiled(tokens, a, s, keys), compress(tokens, a, s, keys, method=method, budget=8)
    for name in ("tokens", "weights", "fate", "slot", "mask"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
