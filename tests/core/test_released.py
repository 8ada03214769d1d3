"""preset="released" reproduces the authors' released RC function, output for output.

The reference below is this test's own re-statement of
``CLIPVisionTower.token_recycling_with_text_in_vision_and_clustring`` (github
banjiuyufen/Recoverable-Compression, commit d927594, llava/model/multimodal_encoder/clip_encoder.py
lines 309-432, with ``find_max_derivative_position`` of lines 36-46), written from its lines in numpy
and scikit-learn for a batch of one. Its inputs are what that function computes from the image: the
[CLS] attention (softmax over 1 + N keys, CLS column dropped), the text score (the cosine times
D^-0.5), the layer -2 patch features and the last layer's patch keys. Where the released function
would raise, the reference raises :class:`ReleasedCrash`.
"""
import numpy as np
import pytest
import torch
from sklearn.neighbors import LocalOutlierFactor

from rclib import Fate, Slot, compress
from rclib.methods.rc import PRESETS, RCConfig, scaled_count

D = 768  # CLIP-L's joint-space width: the released text score is cosine * D^-0.5
C = 1024  # CLIP-L's vision width: features and keys


class ReleasedCrash(Exception):
    """The released function would stop here (torch.topk or LocalOutlierFactor raising)."""


def lof_ratio(scores: np.ndarray, k: int) -> float:
    """find_max_derivative_position: the share of LOF outliers among the scores (float32 points)."""
    points = scores.astype(np.float32).reshape(-1, 1)
    try:
        predicted = LocalOutlierFactor(n_neighbors=k, contamination="auto").fit_predict(points)
    except ValueError as error:  # too few points
        raise ReleasedCrash(f"LocalOutlierFactor on {len(points)} points: {error}") from error
    return np.sum(predicted == -1) / len(predicted)


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """torch.topk(largest=True, sorted=True) indices: the k highest, in descending order."""
    if k > len(scores):
        raise ReleasedCrash(f"topk of {k} among {len(scores)}")
    return np.argsort(-scores, kind="stable")[:k]


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def released_rc(features, cls_attn, text_score, keys):
    """The released function on one image -> (output tokens [K, C], weights [K, N] over the input tokens).

    features [N, C] layer -2 patches; cls_attn [N]; text_score [N] = cosine * D^-0.5; keys [N, C].
    """
    n, width = features.shape
    by_vision = topk(cls_attn, int(n * lof_ratio(cls_attn, 20)))  # 336-338
    pushed = text_score.copy()
    pushed[by_vision] = text_score.min()  # 340-342
    by_text = topk(pushed, int((n - len(by_vision)) * lof_ratio(pushed, 20)))  # 343-345
    selected = np.sort(np.concatenate([by_vision, by_text]))  # 346-347
    rest = np.setdiff1d(np.arange(n), selected)  # complement_idx: ascending
    attn_rest = cls_attn[rest]
    centres = topk(attn_rest, int(width * lof_ratio(attn_rest, 10)))  # 353-359: N is now the width
    text_rest = 50 * pushed[rest]  # 366-367
    others = np.setdiff1d(np.arange(len(rest)), centres)  # 376, ascending
    # 369-378: keys gathered with indices into the rest from the full grid of patch keys
    centre_keys, other_keys = unit(keys[centres]), unit(keys[others])

    rows, weights = [features[selected]], np.zeros((len(selected) + len(centres) + 1, n), np.float32)
    weights[np.arange(len(selected)), selected] = 1
    for i, centre in enumerate(centres):  # 388-421
        candidates = np.concatenate([np.delete(centres, i), others])  # other centres, then the rest
        candidate_keys = np.concatenate([np.delete(centre_keys, i, axis=0), other_keys])
        score = candidate_keys @ centre_keys[i] + text_rest[candidates]
        nearest = candidates[topk(score, 32)]
        merged = np.sum(features[rest[nearest]] * attn_rest[nearest, None], axis=0) + features[rest[centre]]
        rows.append(merged[None])
        row = len(selected) + i
        weights[row, rest[centre]] = 1
        weights[row, rest[nearest]] = attn_rest[nearest]
    extra = np.sum(features[rest[others]] * attn_rest[others, None], axis=0)  # 423
    weights[-1, rest[others]] = attn_rest[others]
    if len(centres) == 0:  # 427-431: the extra token goes too
        return features[selected], weights[: len(selected)]
    return np.concatenate(rows + [extra[None]]), weights


def clip_like(seed: int, n: int):
    """Inputs like CLIP-L's on a natural image: features, [CLS] attention, text cosine, keys (float32).

    [CLS] attention: a softmax over 1 + n logits in which a few artefact tokens take most of the mass;
    text cosine: a smooth field of a few bumps over the patch grid; keys: a shared direction plus a
    low-rank part plus noise, as attention keys are.
    """
    rng = np.random.default_rng(seed)
    side = int(n ** 0.5)
    logits = rng.normal(0, 1, 1 + n)
    artefacts = 1 + rng.choice(n, rng.integers(2, 9), replace=False)
    logits[artefacts] += rng.uniform(6, 10, len(artefacts))
    attn = np.exp(logits - logits.max())
    cls_attn = (attn / attn.sum())[1:].astype(np.float32)
    yy, xx = np.mgrid[:side, :side]
    cosine = np.full((side, side), rng.uniform(0.1, 0.2))
    for _ in range(rng.integers(1, 4)):
        cy, cx, width = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(1.5, side / 4)
        cosine += rng.uniform(0.03, 0.12) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width ** 2))
    cosine = (cosine.flatten() + rng.normal(0, 0.004, n)).astype(np.float32)
    keys = (rng.normal(0, 1, C) * 2 + rng.normal(0, 1, (n, 12)) @ rng.normal(0, 1, (12, C)) * 0.4
            + rng.normal(0, 1, (n, C))).astype(np.float32)
    features = rng.normal(0, 1, (n, C)).astype(np.float32)
    return features, cls_attn, cosine, keys


@pytest.mark.parametrize("n", [576, 256, 144])
def test_released_preset_reproduces_the_released_function(n, inputs=100):
    """Same output slots, same provenance (which tokens, which weights), same tokens: on all 300 inputs."""
    samples = [clip_like(1000 * n + seed, n) for seed in range(inputs)]
    for start in range(0, inputs, 25):
        chunk = samples[start:start + 25]
        features, cls_attn, cosine, keys = (torch.from_numpy(np.stack(part)) for part in zip(*chunk))
        ours = compress(features, cls_attn, cosine, keys, preset="released", text_dim=D)
        for b, (f, a, s, k) in enumerate(chunk):
            tokens, weights = released_rc(f, a, s * np.float32(D ** -0.5), k)  # none of these inputs crashes it
            mine = ours[b]
            assert mine.weights.shape[1] == len(weights), f"input {start + b}: K differs"
            assert torch.equal(mine.weights[0], torch.from_numpy(weights)), f"input {start + b}: provenance differs"
            torch.testing.assert_close(mine.tokens[0], torch.from_numpy(tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_where_the_released_function_crashes_rc_keeps_its_defined_behaviour(seed):
    """36 patches leave M <= 32 tokens: int(1024 * ratio) > M stops the released topk. rc makes every
    remaining token a centre, each absorbing all M - 1 others (fewer than 32), plus a zero extra token."""
    features, cls_attn, cosine, keys = clip_like(seed, 36)
    with pytest.raises(ReleasedCrash, match="topk of"):
        released_rc(features, cls_attn, cosine * np.float32(D ** -0.5), keys)
    r = compress(*(torch.from_numpy(x[None]) for x in (features, cls_attn, cosine, keys)), preset="released")[0]
    rest = (r.fate[0] == Fate.CENTRE) | (r.fate[0] == Fate.MERGED)
    m = int(rest.sum())
    assert int((r.fate[0] == Fate.CENTRE).sum()) == m and 0 < m <= 32
    centre_rows = r.weights[0, r.slot[0] == Slot.CENTRE]
    assert (centre_rows[:, rest] > 0).sum(1).tolist() == [m] * m, "each centre: itself and all m - 1 others"
    assert r.slot[0, -1] == Slot.EXTRA and not bool(r.weights[0, -1].any()), "the extra token is empty (zero)"


def test_released_text_count_uses_the_float_product(monkeypatch):
    """n_v = 144 and 148 text outliers of 576: int(432 * (148 / 576)) = 110, one below 432 * 148 // 576."""
    from rclib.methods import rc

    counts = iter([torch.tensor([144]), torch.tensor([148]), torch.tensor([0])] * 2)
    monkeypatch.setattr(rc, "outlier_count", lambda *args, **kwargs: next(counts))
    tokens, a, s, keys = (torch.randn(1, 576, 4), torch.rand(1, 576), torch.rand(1, 576), torch.randn(1, 576, 4))
    assert int(compress(tokens, a, s, keys).n_text[0]) == 111
    assert int(compress(tokens, a, s, keys, preset="released").n_text[0]) == 110


def test_released_count_rounding_is_the_float_product():
    n = torch.arange(1, 1025).repeat_interleave(torch.arange(1, 1025) + 1)  # every (n, count <= n)
    count = torch.cat([torch.arange(m + 1) for m in range(1, 1025)])
    released = scaled_count(n, count, n, "float")
    expected = torch.tensor([int(m * (c / m)) for m, c in zip(n.tolist(), count.tolist())])
    assert torch.equal(released, expected)
    assert int((released != count).sum()) > 0 and int(scaled_count(554, torch.tensor(7), 554, "float")) == 6
    assert torch.equal(scaled_count(n, count, n, "exact"), count)
    text = scaled_count(576 - torch.tensor([40]), torch.tensor([29]), 576, "float")
    assert text.tolist() == [int(536 * (29 / 576))]


def inputs_small(seed=0, N=16):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, N, 8, generator=g), torch.softmax(torch.randn(1, N, generator=g) * 3, 1),
            torch.rand(1, N, generator=g) * 0.3, torch.randn(1, N, 8, generator=g))


def test_released_extra_token_goes_with_the_centres():
    tokens, a, s, keys = inputs_small()
    # no centre: the paper keeps the extra token, the released code drops it and the rest with it
    paper = compress(tokens, a, s, keys, budget=9, budget_split=(1.0, 0.0, 0.0))
    released = compress(tokens, a, s, keys, budget=9, budget_split=(1.0, 0.0, 0.0), preset="released")
    assert paper.slot[0].tolist() == [Slot.KEPT] * 8 + [Slot.EXTRA]
    assert released.slot[0].tolist() == [Slot.KEPT] * 8
    assert int((released.fate == Fate.DROPPED).sum()) == 8 and int((paper.fate == Fate.MERGED).sum()) == 8
    # every remaining token a centre: the released code still appends its (zero) extra token
    all_centres = {"budget": 17, "budget_split": (0.5, 0.0, 0.5)}  # 16 slots: 8 kept, 8 centres = the rest
    paper = compress(tokens, a, s, keys, **all_centres)
    released = compress(tokens, a, s, keys, **all_centres, preset="released")
    assert paper.slot[0].tolist() == [Slot.KEPT] * 8 + [Slot.CENTRE] * 8
    assert released.slot[0].tolist() == [Slot.KEPT] * 8 + [Slot.CENTRE] * 8 + [Slot.EXTRA]
    assert not bool(released.tokens[0, -1].any())


def centre_ids(r):
    """The input token each centre slot grows from (its weight-1 entry), in slot order."""
    return r.weights[0, r.slot[0] == Slot.CENTRE].eq(1).float().argmax(1)


def test_released_centres_come_in_descending_attention_order():
    tokens, a, s, keys = inputs_small(1)
    options = {"budget": 11, "budget_split": (0.5, 0.0, 0.5)}  # 5 kept, 5 centres
    raster = compress(tokens, a, s, keys, **options)
    by_attention = compress(tokens, a, s, keys, **options, centre_order="attention")
    assert torch.equal(centre_ids(raster), centre_ids(raster).sort().values)
    assert torch.equal(centre_ids(by_attention), centre_ids(raster)[a[0, centre_ids(raster)].argsort(descending=True)])
    assert torch.equal(by_attention.tokens[0, :5], raster.tokens[0, :5])


def test_preset_expands_to_options_that_explicit_ones_override():
    released = RCConfig.preset("released")
    assert (released.count_rounding, released.centre_count, released.key_indexing, released.centre_order,
            released.extra_token) == ("float", "released", "released", "attention", "if_centres")
    assert RCConfig.preset("paper") == RCConfig.preset(None) == RCConfig()
    assert RCConfig.preset("released", key_indexing="correct").key_indexing == "correct"
    assert set(PRESETS["released"]) <= {f for f in RCConfig.__dataclass_fields__}
    with pytest.raises(ValueError, match="unknown rc preset 'relased'"):
        RCConfig.preset("relased")
    with pytest.raises(ValueError, match="method 'rc' takes no option 'knn_weight'"):
        compress(*inputs_small(), preset="released", knn_weight=1.0)


def test_text_weight_reads_the_joint_width():
    assert RCConfig().text_weight == 50 * 768 ** -0.5
    assert RCConfig(text_dim=64).text_weight == 50 / 8
    assert RCConfig(text_dim=64, knn_text_weight=2.0).text_weight == 2.0


@pytest.mark.parametrize("option, value, message", [
    ("centre_order", "random", "centre_order='random'"), ("extra_token", "always", "extra_token"),
    ("count_rounding", "round", "count_rounding"), ("centre_count", "all", "centre_count"),
    ("key_indexing", "wrong", "key_indexing"), ("rule", "mad", "rule"), ("knn_k", 0, "knn_k"),
    ("text_dim", 0, "text_dim"), ("budget_split", (0.5, 0.5, 0.5), "budget_split")])
def test_bad_options_say_what_to_use(option, value, message):
    with pytest.raises(ValueError, match=message):
        RCConfig(**{option: value})
