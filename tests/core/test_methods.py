"""Every method: provenance is true, order is kept, batches equal single samples, budgets hold."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rclib
from rclib import Fate, Slot, compress

ALL = sorted(name for name, spec in rclib.METHODS.items() if spec.placement == "before_llm")  # compress runs these


def inputs(seed: int, B: int = 3, N: int = 144, C: int = 16, Ck: int = 8):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(B, N, C, generator=g)
    cls_attn = torch.softmax(torch.randn(B, N, generator=g) * 3, dim=1)  # peaky, like a [CLS] row
    text_sim = torch.randn(B, N, generator=g) * 0.1
    keys = torch.randn(B, N, Ck, generator=g)
    return tokens, cls_attn, text_sim, keys


def truth(method: str, tokens: torch.Tensor) -> dict:
    """The ground-truth mask a method that needs one (the oracle) gets: every fifth patch."""
    B, N, _ = tokens.shape
    return {"target": (torch.arange(N) % 5 == 0).expand(B, N)} if "target" in rclib.METHODS[method].needs else {}


def check_provenance(r, tokens):
    assert torch.allclose(r.tokens, r.weights @ tokens, atol=1e-5), "tokens must equal weights @ inputs"
    assert bool((r.tokens[~r.mask] == 0).all()) and bool((r.weights[~r.mask] == 0).all())
    assert bool((r.slot[~r.mask] == Slot.PAD).all()) and bool((r.slot[r.mask] != Slot.PAD).all())
    k = r.mask.sum(1, keepdim=True)
    assert bool((r.mask == (torch.arange(r.mask.shape[1]) < k)).all()), "valid slots must be a prefix"
    feeds = (r.weights > 0).any(1)  # [B, N] input token reaches some output slot
    assert bool((feeds == (r.fate != Fate.DROPPED)).all()), "a token is dropped iff it feeds no slot"
    for fate, slot in ((Fate.KEPT, Slot.KEPT), (Fate.RECOVERED, Slot.RECOVERED)):
        # kept / recovered tokens reach exactly one slot of their kind, unchanged (weight 1, alone)
        for b in range(len(r)):
            idx = torch.nonzero(r.fate[b] == fate).flatten()
            if len(idx) == 0:  # none (the released preset can even output no token at all)
                continue
            rows = r.weights[b][:, idx].argmax(0)
            assert bool((r.slot[b, rows] == slot).all())
            assert bool((r.weights[b, rows, idx] == 1).all())
            assert bool(((r.weights[b, rows] > 0).sum(1) == 1).all())


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("budget", [None, 1, 16, 64, 200])
def test_provenance_batches_and_budget(method, budget):
    tokens, a, s, keys = inputs(0)
    r = compress(tokens, a, s, keys, method=method, budget=budget, **truth(method, tokens))
    check_provenance(r, tokens)
    if budget is not None and method != "full":
        assert int(r.n_output.max()) <= budget, f"{method} exceeded budget {budget}: {r.n_output.tolist()}"
    for b in range(3):
        alone = compress(tokens[b:b + 1], a[b:b + 1], s[b:b + 1], keys[b:b + 1], method=method, budget=budget,
                         **truth(method, tokens[b:b + 1]))
        assert torch.equal(alone.weights, r[b].weights) and torch.equal(alone.fate, r[b].fate)
        assert torch.allclose(alone.tokens, r[b].tokens, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 80), method=st.sampled_from(ALL),
       budget=st.one_of(st.none(), st.integers(1, 90)), rule=st.sampled_from(["lof", "iqr"]),
       preset=st.sampled_from([None, "released"]))
def test_provenance_property(seed, n, method, budget, rule, preset):
    side = max(1, int(n ** 0.5))
    n = side * side if method == "pool" else n
    tokens, a, s, keys = inputs(seed, B=2, N=n)
    options = {"rule": rule, "preset": preset} if method == "rc" else truth(method, tokens)
    r = compress(tokens, a, s, keys, method=method, budget=budget, **options)
    check_provenance(r, tokens)


def test_rc_keeps_original_order_and_counts():
    tokens, a, s, keys = inputs(1, B=2, N=576, C=32)
    r = compress(tokens, a, s, keys)
    for b in range(2):
        kept, rec = r.kept_indices[b], r.recovered_indices[b]
        assert len(kept) == int(r.n_visual[b]) > 0
        selected = torch.cat([kept, rec]).sort().values
        # the first slots hold the kept and recovered tokens, in raster order
        first = r.weights[b, : len(selected)].argmax(1)
        assert torch.equal(first, selected)
        n_centres = int((r.slot[b] == Slot.CENTRE).sum())
        assert int(r.n_output[b]) == len(selected) + n_centres + 1  # + the extra token
        assert r.slot[b, int(r.n_output[b]) - 1] == Slot.EXTRA


def test_rc_text_stage_recovers_text_relevant_tokens():
    tokens, a, s, keys = inputs(2, B=1, N=576)
    s[0, 100:104] = 1.0  # four tokens the question is about, with ordinary [CLS] attention
    a[0, 100:104] = a[0].median()
    r = compress(tokens, a, s, keys)
    assert set(range(100, 104)) <= set(r.recovered_indices[0].tolist())
    off = compress(tokens, a, s, keys, text_stage=False)
    assert len(off.recovered_indices[0]) == 0


def test_rc_switches_change_what_they_say():
    tokens, a, s, keys = inputs(3, B=1, N=576, C=64)
    base = compress(tokens, a, s, keys)
    released = compress(tokens, a, s, keys, centre_count="released")
    n_rest = 576 - int(base.n_visual[0]) - int(base.n_text[0])
    n_c = int((base.slot[0] == Slot.CENTRE).sum())
    assert int((released.slot[0] == Slot.CENTRE).sum()) == min(n_rest, 64 * n_c // n_rest)
    budgeted = compress(tokens, a, s, keys, budget=64)  # 15 centres, so the keys matter
    wrong_keys = compress(tokens, a, s, keys, budget=64, key_indexing="released")
    assert torch.equal(wrong_keys.fate, budgeted.fate) and not torch.equal(wrong_keys.weights, budgeted.weights)
    iqr = compress(tokens, a, s, keys, rule="iqr")
    assert not torch.equal(iqr.fate, base.fate)


def test_rc_fixed_budget_split():
    tokens, a, s, keys = inputs(4, B=2, N=576)
    r = compress(tokens, a, s, keys, budget=64)
    assert r.n_output.tolist() == [64, 64]
    assert r.n_visual.tolist() == [31, 31] and r.n_text.tolist() == [16, 16]  # 63 slots: 31 / 16 / 16 + extra


def test_degenerate_and_bad_inputs():
    tokens, a, s, keys = inputs(5, B=1, N=50)
    flat = compress(tokens, torch.full_like(a, 1 / 50), torch.zeros_like(s), keys)  # nothing stands out
    assert flat.n_output.tolist() == [1] and flat.slot[0, 0] == Slot.EXTRA
    empty = compress(tokens[:0], a[:0], s[:0], keys[:0])
    assert empty.tokens.shape == (0, 0, 16)
    with pytest.raises(ValueError, match="NaN or inf"):
        compress(tokens, a.masked_fill(a > a.median(), float("inf")), s, keys)
    with pytest.raises(ValueError, match="unknown method"):
        compress(tokens, a, s, keys, method="no-such-method")
    with pytest.raises(ValueError, match="cls_attn must be"):
        compress(tokens, a[:, :10], s, keys)
    with pytest.raises(ValueError, match="budget must be"):
        compress(tokens, a, s, keys, budget=0)
    with pytest.raises(ValueError, match="text_stage=False"):
        compress(tokens, a, None, keys)


def test_divprune_picks_one_of_each_distinct_token_first():
    distinct = torch.eye(6)  # six orthogonal directions, each repeated 10 times
    tokens = distinct.repeat_interleave(10, dim=0)[None]  # [1, 60, 6]
    r = compress(tokens, method="divprune", budget=6)
    assert sorted(tokens[0, r.kept_indices[0]].argmax(1).tolist()) == list(range(6))


def test_visionzip_contextual_tokens_average_their_group():
    tokens, a, s, keys = inputs(6, B=1, N=144)
    r = compress(tokens, a, s, keys, method="visionzip", budget=16)
    centre_rows = r.weights[0][r.slot[0] == Slot.CENTRE]
    assert torch.allclose(centre_rows.sum(1), torch.ones(len(centre_rows)))  # averages: weights sum to 1
    assert int((r.fate == Fate.DROPPED).sum()) == 0  # every non-dominant token joins a contextual group


def test_oracle_keeps_the_target_first_then_the_top_attention():
    torch.manual_seed(3)
    tokens, attn = torch.randn(2, 36, 8), torch.rand(2, 36)
    target = torch.zeros(2, 36, dtype=torch.bool)
    target[0, [3, 4, 5]] = True  # smaller than the budget: all of it, plus the 3 best others
    target[1, :10] = True  # larger than the budget: its 6 best patches
    r = rclib.compress(tokens, attn, method="oracle", budget=6, target=target)
    others = attn[0].masked_fill(target[0], -1).topk(3).indices
    assert r.kept_indices[0].tolist() == sorted([3, 4, 5, *others.tolist()])
    assert r.kept_indices[1].tolist() == sorted(attn[1, :10].topk(6).indices.tolist())
    with pytest.raises(ValueError, match="needs target"):
        rclib.compress(tokens, attn, method="oracle", budget=6)


def test_a_token_with_a_slot_of_its_own_gives_it_the_kind_of_its_fate():
    assert [int(Slot[f.name]) for f in (Fate.KEPT, Fate.RECOVERED, Fate.CENTRE)] == [0, 1, 2] == [
        int(Fate.KEPT), int(Fate.RECOVERED), int(Fate.CENTRE)]


def test_merge_reads_only_the_centres_rows_of_the_similarity():
    from rclib.methods.common import centre_rows, cosine_matrix

    keys = torch.randn(2, 40, 16)
    keys[0, 3] = 0  # a zero key: cosine 0 with everything, as a normalised copy would give
    centres = torch.zeros(2, 40, dtype=torch.bool)
    centres[0, [5, 1, 30]] = True
    centres[1, 7] = True
    index, valid = centre_rows(centres)
    assert index[0].tolist() == [1, 5, 30] and index[1, 0] == 7 and valid.tolist() == [[True] * 3, [True, False, False]]
    unit = torch.nn.functional.normalize(keys, dim=-1)
    full = unit @ unit.transpose(1, 2)
    assert torch.allclose(cosine_matrix(keys), full, atol=1e-6)
    assert torch.allclose(cosine_matrix(keys, index), full.gather(1, index[:, :, None].expand(-1, -1, 40)), atol=1e-6)
    # rc at LLaVA's shape and a large batch never holds a [B, N, N] matrix
    tokens, text_sim = torch.randn(16, 576, 64), torch.randn(16, 576)
    cls_attn = torch.softmax(torch.randn(16, 576) * 3, 1)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        compress(tokens, cls_attn, 0.1 * text_sim, torch.randn(16, 576, 64), method="rc")
    shapes = [shape for event in prof.events() for shape in event.input_shapes if len(shape) == 3]
    assert [16, 576, 576] not in shapes


def test_the_registry_types_methods_inside_the_llm_apart():
    from rclib.methods.pruner import PrunerBase
    from rclib.methods.registry import PLACEMENTS, PrunerSpec

    tokens = inputs(0)[0]
    for name, spec in rclib.METHODS.items():
        assert spec.placement in PLACEMENTS
        assert isinstance(spec, PrunerSpec) == (spec.placement == "inside_llm"), name
        if isinstance(spec, PrunerSpec):
            pruner = spec.fn(tokens, budget=8)
            assert isinstance(pruner, PrunerBase), f"{name}'s pruner has every hook of the Pruner protocol"
            assert pruner.for_depth(32).layers and pruner.source in ("attention", "own_attention", "states")
    with pytest.raises(ValueError, match="inside the LLM"):
        compress(tokens, method="fastv", budget=8)


def test_the_registry_declares_controls_and_labels_of_real_options():
    for name, spec in rclib.METHODS.items():
        assert set(spec.controls) <= set(spec.options), name
        for option, control in spec.controls.items():
            default = spec.options[option]
            if control.kind in ("int", "float"):
                assert control.low <= default <= control.high, f"{name}.{option}: its default is off the slider"
            if control.kind == "choice":
                assert default in control.choices, f"{name}.{option}"
        assert spec.kept_label.startswith("kept"), name
    assert rclib.METHODS["rc"].kept_label == "kept (visual)" and rclib.METHODS["divprune"].kept_label != "kept (visual)"
