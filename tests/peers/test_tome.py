"""ToMe: bipartite soft matching merges the most similar pairs, outputs are means of their sources; by default
on the keys of the layer whose output it merges (the feature layer's, mean over heads), RC's on request."""
import torch

from rclib import Fate, Slot, compress
from rclib.methods.tome import bipartite_round


def test_one_round_merges_the_most_similar_a_b_pairs():
    # keys in 2-D: tokens alternate A (0, 2, 4) / B (1, 3, 5); 0~1 and 4~5 are near-identical, 2 is far from all
    keys = torch.tensor([[[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [-1.0, 0.3], [-1.0, -1.0], [-1.0, -1.01]]])
    patches = torch.arange(6)[None]
    owner, survivor = bipartite_round(keys, patches, patches, 2)
    assert survivor[0].tolist() == [1, 2, 3, 5], "the merged A tokens 0 and 4 are gone, the rest in original order"
    assert owner[0].tolist() == [0, 0, 1, 2, 3, 3], "each patch's alive token, numbered in original order"
    owner, survivor = bipartite_round(keys, owner, survivor, 1)  # alive 1, 2, 3, 5: A = (1, 3), B = (2, 5)
    assert survivor[0].tolist() == [1, 2, 5], "3 is closer to the mean key of 4 and 5 than 1 is to 2's"
    assert owner[0].tolist() == [0, 0, 1, 2, 2, 2]


def test_outputs_are_source_means_in_original_order():
    g = torch.Generator().manual_seed(0)
    tokens, keys = torch.randn(2, 40, 6, generator=g), torch.randn(2, 40, 5, generator=g)
    for b, k in ((0, 7), (1, 13)):
        r = compress(tokens, keys=keys, method="tome", budget=k)
        assert r.n_output.tolist() == [k, k]
        sources = r.weights[b, :k] > 0  # [K, N]
        assert bool((sources.sum(0) == 1).all()), "every patch is the source of exactly one output token"
        for slot in range(k):
            torch.testing.assert_close(r.tokens[b, slot], tokens[b, sources[slot]].mean(0))
        survivors = torch.nonzero(r.fate[b] != Fate.MERGED).flatten()  # the token each group merged into
        assert r.weights[b, :k, survivors].argmax(0).tolist() == list(range(k)), "slots in survivors' original order"
        single = sources.sum(1) == 1
        assert r.slot[b, :k].tolist() == [int(Slot.KEPT) if one else int(Slot.CENTRE) for one in single]


def test_identical_keys_merge_before_distinct_ones():
    """Pairs of duplicated keys collapse first: K = N/2 leaves one token per pair."""
    g = torch.Generator().manual_seed(2)
    base = torch.randn(1, 8, 4, generator=g)
    keys = base.repeat_interleave(2, 1)  # tokens 2i and 2i+1 share a key
    r = compress(torch.randn(1, 16, 3, generator=g), keys=keys, method="tome", budget=8)
    pairs = (r.weights[0] > 0).float().argmax(0)  # [N] slot of each patch
    assert torch.equal(pairs[0::2], pairs[1::2]) and len(set(pairs.tolist())) == 8


def test_tome_reads_the_feature_layer_keys_unless_told_to_share(tiny_model, tiny_images):
    encoded = tiny_model.encode(tiny_images[:2], ["what colour is the circle ?", "where is it ?"])
    own = tiny_model.compress(encoded, "tome", 8)
    alone = compress(encoded.features, keys=encoded.keys_head_mean, method="tome", budget=8)
    assert torch.equal(own.weights, alone.weights), "ToMe's metric: the feature layer's keys, mean over heads"
    shared = tiny_model.compress(encoded, "tome", 8, scores="shared")
    assert torch.equal(shared.weights, compress(encoded.features, keys=encoded.keys, method="tome", budget=8).weights)
    assert not torch.equal(own.weights, shared.weights), "the two key sources merge differently here"
