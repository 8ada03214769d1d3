"""The peers' own scores (feature layer, per head) come from the same vision forward and equal transformers'."""
import copy

import pytest
import torch

from rclib import Fate


def test_feature_layer_scores_equal_transformers_attentions(tiny_model, tiny_images):
    encoded = tiny_model.encode(tiny_images[:2], ["what colour is the circle ?", "where is it ?"])
    tower = copy.deepcopy(tiny_model.model.model.vision_tower)
    tower.set_attn_implementation("eager")
    out = tower(encoded.pixel_values, output_hidden_states=True, output_attentions=True)
    layer = tower.encoder.layers[-2]  # makes hidden_states[-2], LLaVA's feature layer
    torch.testing.assert_close(encoded.cls_attn_head_mean, out.attentions[-2][:, :, 0, 1:].mean(1))
    keys = layer.self_attn.k_proj(layer.layer_norm1(out.hidden_states[-3]))  # [B, 1 + N, C]
    heads = tower.config.num_attention_heads
    torch.testing.assert_close(encoded.keys_head_mean, keys.view(*keys.shape[:2], heads, -1).mean(2)[:, 1:])
    assert not torch.allclose(encoded.cls_attn_head_mean, encoded.cls_attn), "a different score from RC's"


def test_a_peer_runs_on_its_own_scores(tiny_model, tiny_images):
    encoded = tiny_model.encode(tiny_images[:2], ["what colour is the circle ?", "where is it ?"])
    faithful = tiny_model.compress(encoded.with_feature_layer_scores(), "fastervlm", 9)
    for b in range(2):
        top = set(encoded.cls_attn_head_mean[b].topk(9).indices.tolist())
        assert set(torch.nonzero(faithful.fate[b] == Fate.KEPT).flatten().tolist()) == top
    zipped = tiny_model.run(encoded.with_feature_layer_scores(), "visionzip", 10, max_new_tokens=2)
    assert zipped.result.n_output.tolist() == [10, 10]


def test_feature_layer_scores_need_an_encoder_output(tiny_model, tiny_images):
    encoded = tiny_model.encode(tiny_images[0], "where is it ?")
    bare = copy.copy(encoded)
    bare.cls_attn_head_mean = None
    with pytest.raises(ValueError, match="CompressedModel.encode"):
        bare.with_feature_layer_scores()
