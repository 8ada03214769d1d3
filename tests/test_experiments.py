"""rclib.experiments: the shuffled-order variant changes only the order of the selected tokens."""
import torch

import rclib
from rclib.experiments import Variant, run_variants, shuffle_kept
from rclib.result import Slot


def test_shuffle_kept_permutes_only_kept_and_recovered_slots():
    torch.manual_seed(0)
    tokens, attn, text, keys = torch.randn(2, 36, 8), torch.rand(2, 36), torch.randn(2, 36), torch.randn(2, 36, 8)
    result = rclib.compress(tokens, attn, text, keys, method="rc", budget=20)
    shuffled = shuffle_kept(result, seed=1)
    selected = (result.slot == Slot.KEPT) | (result.slot == Slot.RECOVERED)
    assert torch.equal(shuffled.mask, result.mask) and torch.equal(shuffled.fate, result.fate)
    assert torch.equal(shuffled.tokens[~selected], result.tokens[~selected]), "merged tokens keep their places"
    for b in range(2):
        before, after = result.tokens[b][selected[b]], shuffled.tokens[b][selected[b]]
        assert not torch.equal(before, after), "the order changed"
        assert torch.equal(before.sort(0).values, after.sort(0).values), "the same tokens"
    assert torch.allclose(torch.bmm(shuffled.weights, tokens), shuffled.tokens, atol=1e-5), "weights moved along"


def test_run_variants_gives_a_bench_row_per_variant(tiny_model):
    rows = run_variants(tiny_model, {"rc": Variant(), "rc, no text": Variant(options={"text_stage": False}),
                                     "shuffled": Variant(budget=8, shuffle_kept=True)}, n=3)
    assert [r["method"] for r in rows] == ["rc", "rc, no text", "shuffled"]
    assert rows[2]["budget"] == "8" and rows[2]["mean_tokens"] <= 8
    assert all(r["n"] == 3 and 0 <= r["accuracy"] <= 1 for r in rows)
