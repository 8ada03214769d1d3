"""VisPruner, PruMerge(+) and ToMe at a fixed budget: no host sync (their one torch.compile graph is checked in
tests/core/test_launches.py). Adaptive PruMerge(+) must read its counts on the host: how many centres and output
slots depend on the scores."""
import pytest

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
        for checks in (False, True):  # the most centres and output slots, read together; the value check's scan
            _, counted = count_ops(compress, tokens, a, s, keys, method=method, check_values=checks)
            assert counted.syncs == 1 + checks, (method, checks, dict(counted.ops))
