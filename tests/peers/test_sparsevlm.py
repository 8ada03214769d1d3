"""SparseVLM inside the LLM: greedy answers equal a plain-torch reference (raters, several pruning layers, token
recycling), batches equal samples, provenance per layer, the schedule for LLaVA-1.5-7B."""
import math

import pytest
import torch
from test_fastv import reference_greedy, reference_layer

import rclib
from rclib.methods.sparsevlm import LAYERS, density_peak_clusters, stage_counts, token_schedule

MAX_NEW = 8


def reference_top(scores, k):
    """Indices of the k highest scores, ties to the lower index."""
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:k]


def reference_clusters(x, k):
    """DPC-KNN on x [P, C] into k clusters, one token at a time: [(centre, members)] in centre order."""
    P = len(x)
    d = torch.cdist(x, x) / x.shape[1] ** 0.5
    density = [math.exp(-float((d[i].sort().values[:k] ** 2).sum()) / k) for i in range(P)]
    delta = []
    for i in range(P):
        denser = [j for j in range(P) if density[j] > density[i] or (density[j] == density[i] and j < i)]
        delta.append(min(float(d[i, j]) for j in denser) if denser else float(d.max()))
    centres = sorted(reference_top([delta[i] * density[i] for i in range(P)], k))
    owner = [i if i in centres else centres[int(d[i, centres].argmin())] for i in range(P)]
    return [(c, [i for i in range(P) if owner[i] == c]) for c in centres]


def reference_sparsevlm(model, embeds, image_places, layers, counts, max_new, share=0.3, cluster_share=0.1):
    """SparseVLM on one unpadded sample embeds [L, H], recomputing everything at every step without a cache.

    At each pruning layer (decided once, at prefill): the rows after the image rate it; those whose mean
    attention to the visual places reaches the rows' mean are raters; the visual places with the best mean
    rater attention stay; the best ceil(share * pruned) pruned ones are clustered and each cluster's mean
    enters right after the visual places, at its centre's position.
    """
    llm, config = model.model.model.language_model, model.model.config.text_config
    plans = {}

    def forward(sequence):
        x, position = sequence, torch.arange(len(sequence))
        visual = torch.zeros(len(sequence), dtype=torch.bool)
        visual[image_places] = True
        for i, layer in enumerate(llm.layers):
            if i in layers:
                vis = torch.nonzero(visual).flatten().tolist()
                if i not in plans:  # prefill: decide once
                    a = attention.mean(0)  # [L, L] head mean of layer i - 1
                    rows = list(range(vis[-1] + 1, len(x)))
                    to_visual = a[rows][:, vis].mean(1)
                    raters = [r for r, v in zip(rows, to_visual) if v >= to_visual.mean()]
                    score = a[raters][:, vis].mean(0)
                    kept = [vis[j] for j in reference_top(score, counts[layers.index(i)])]
                    pruned = [j for j in range(len(vis)) if vis[j] not in kept]
                    pool = sorted(vis[pruned[j]] for j in reference_top(score[pruned], math.ceil(len(pruned) * share)))
                    k = math.ceil(len(pool) * cluster_share)
                    clusters = [(pool[c], [pool[m] for m in members])
                                for c, members in reference_clusters(x[pool], k)] if pool else []
                    plans[i] = (kept, clusters)
                kept, clusters = plans[i]
                before = [p for p in range(vis[-1] + 1) if not visual[p] or p in kept]
                after = list(range(vis[-1] + 1, len(x)))
                new_x = torch.stack([x[members].mean(0) for _, members in clusters]) if clusters else x[:0]
                new_position = torch.tensor([int(position[c]) for c, _ in clusters], dtype=torch.long)
                x = torch.cat([x[before], new_x, x[after]])
                position = torch.cat([position[before], new_position, position[after]])
                visual = torch.cat([visual[before], torch.ones(len(clusters), dtype=torch.bool), visual[after]])
            x, attention = reference_layer(layer, x, position, config)
        return x

    return reference_greedy(model, embeds, max_new, forward)


@torch.no_grad()
@pytest.mark.parametrize("layers, counts, share, cluster_share", [
    ((1, 2, 3), (20, 8, 3), 0.3, 0.1), ((2,), (5,), 0.5, 0.2), ((1, 3), (30, 6), 1.0, 0.25)])
def test_sparsevlm_equals_plain_torch_reference(deep_model, deep_encoded, layers, counts, share, cluster_share):
    ids = deep_model.generate_inside(deep_encoded, "sparsevlm", None, MAX_NEW, layers=layers, counts=counts,
                                     recycle_share=share, cluster_share=cluster_share)[1]
    embeds, mask = deep_model.llm_inputs(deep_encoded, rclib.compress(deep_encoded.features, method="full"))
    places = deep_model.image_places(deep_encoded, embeds.shape[1])
    for b in range(len(deep_encoded)):
        real = mask[b].bool()
        image = torch.nonzero(places[b][real] >= 0).flatten()
        expected = reference_sparsevlm(deep_model, embeds[b][real], image, layers, counts, MAX_NEW, share,
                                       cluster_share)
        assert len(expected) > 2, "the model should say something"
        pad = [deep_model.pad_token_id] * (ids.shape[1] - len(expected))
        assert ids[b].tolist() == expected + pad, f"sample {b}"


def test_sparsevlm_keeping_everything_equals_transformers_generate(deep_model, deep_encoded):
    N = deep_encoded.n_tokens
    ours = deep_model.generate_inside(deep_encoded, "sparsevlm", None, MAX_NEW, layers=(1, 2, 3),
                                      counts=(N, N, N))[1]
    reference = deep_model.generate_ids(deep_encoded, deep_model.compress(deep_encoded, "full"), MAX_NEW)
    assert torch.equal(ours, reference)


def test_sparsevlm_batch_equals_single_samples_and_layer_provenance(deep_model, deep_encoded, tiny_images,
                                                                    questions):
    options = dict(layers=(1, 3), counts=(12, 4))
    batch = deep_model.run(deep_encoded, "sparsevlm", None, MAX_NEW, **options)
    N, seen = deep_encoded.n_tokens, batch.layer_seen
    assert seen.shape == (3, 4, N) and seen[:, 0].all()
    # stage 1 keeps 12 image tokens, 52 pruned, 16 recycled into 2 tokens; stage 2 keeps 4 of those 14, 10 pruned, 4 recycled into 1
    assert seen[:, 1:3].sum(2).tolist() == [[12, 12]] * 3 and token_schedule(N, 4, (1, 3), (12, 4)) == [64, 14, 14, 5]
    assert (seen[:, 3] <= seen[:, 2]).all() and (seen[:, 3].sum(1) <= 4).all()
    assert torch.equal(batch.result.fate == rclib.Fate.KEPT, seen[:, 3]) and batch.seconds.keys() == {"generate"}
    assert set(batch.result.scores) == {"llm_attention_layer0", "llm_attention_layer2"}
    for b in range(3):
        single = deep_model.answer(tiny_images[b], questions[b], method="sparsevlm", max_new_tokens=MAX_NEW, **options)
        assert single.texts[0] == batch.texts[b]
        assert torch.equal(single.layer_seen[0], seen[b])


def test_released_schedules_for_llava_7b():
    assert [stage_counts(b, 576) for b in (64, 128, 192)] == [(66, 30, 17), (303, 110, 36), (300, 200, 110)]
    assert stage_counts(576, 576) == (576, 576, 576) and stage_counts(32, 576) == (33, 15, 8)
    assert token_schedule(576, 32, LAYERS, (66, 30, 17)) == [576] * 3 + [82] * 4 + [32] * 9 + [18] * 16
    assert token_schedule(576, 32, LAYERS, (303, 110, 36)) == [576] * 3 + [312] * 4 + [117] * 9 + [39] * 16
    assert token_schedule(576, 32, LAYERS, (300, 200, 110)) == [576] * 3 + [309] * 4 + [204] * 9 + [113] * 16
    assert token_schedule(576, 32, LAYERS, (66, 30, 17), recycle_share=0) == [576] * 3 + [66] * 4 + [30] * 9 + [17] * 16


def test_density_peak_clusters_on_points():
    x = torch.tensor([[0.0], [1.0], [2.5], [10.0], [10.5], [99.0]])[None].repeat(2, 1, 1)  # [2, 6, 1]
    valid = torch.tensor([[True] * 5 + [False], [True] * 5 + [False]])
    centres, assignment = density_peak_clusters(x, valid, torch.tensor([2, 1]))
    # densities exp(-0.5), exp(-0.5), exp(-1.125), exp(-0.125), exp(-0.125): 10.0 is densest (ties: lower
    # index), 0.0 is the farthest from a denser token. One cluster: one neighbour (itself), every density is 1,
    # the first token is the densest and the only centre
    assert centres.tolist() == [[True, False, False, True, False, False], [True, False, False, False, False, False]]
    assert assignment.tolist() == [[0, 0, 0, 3, 3, -1], [0, 0, 0, 0, 0, -1]]


def test_sparsevlm_refuses_bad_input(deep_model, deep_encoded, tiny_model):
    with pytest.raises(ValueError, match="inside the LLM"):
        rclib.compress(deep_encoded.features, method="sparsevlm")
    with pytest.raises(ValueError, match="not both"):
        deep_model.run(deep_encoded, "sparsevlm", 8, layers=(1,), counts=(4,))
    with pytest.raises(ValueError, match="give counts"):
        deep_model.run(deep_encoded, "sparsevlm", 8, layers=(1, 2))
    with pytest.raises(ValueError, match="one integer >= 1 per layer"):
        deep_model.run(deep_encoded, "sparsevlm", layers=(1, 2), counts=(4,))
    with pytest.raises(ValueError, match="ascending"):
        deep_model.run(deep_encoded, "sparsevlm", layers=(2, 1), counts=(4, 2))
    with pytest.raises(ValueError, match="recycle_share"):
        deep_model.run(deep_encoded, "sparsevlm", layers=(1,), counts=(4,), recycle_share=1.5)
    with pytest.raises(ValueError, match=r"1\.\.3"):  # explicit layers must fit the model
        deep_model.run(deep_encoded, "sparsevlm", layers=(3, 7), counts=(8, 4))
    with pytest.raises(ValueError, match="budget must be a positive number"):
        deep_model.run(deep_encoded, "sparsevlm", 0)
    with pytest.raises(ValueError, match="no option"):
        deep_model.run(deep_encoded, "sparsevlm", 8, k=2)


def test_default_layers_move_to_the_same_relative_depth(deep_model, deep_encoded):
    plan = rclib.METHODS["sparsevlm"].fn(deep_encoded.features, budget=64)
    assert (plan.layers, plan.depth) == ((3, 7, 16), 32)
    assert (plan.for_depth(32), plan.for_depth(40).layers, plan.for_depth(8).layers) == (plan, (4, 9, 20), (1, 2, 4))
    shallow = plan.for_depth(4)  # 3, 7, 16 of 32 -> 0.375, 0.875, 2 of 4: stages on one layer keep the later count
    assert (shallow.layers, shallow.counts) == ((1, 2), plan.counts[1:])
    run = deep_model.run(deep_encoded, "sparsevlm", 8)  # 4 decoder layers: runs with the moved layers
    assert run.layer_seen.shape[1] == 4 and bool((run.layer_seen[:, 0].sum(1) == deep_encoded.n_tokens).all())
