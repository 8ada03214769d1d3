"""One vision forward: features, [CLS] attention and keys against direct computations from the weights."""
import math

import torch
import torch.nn.functional as F

from rclib.models.vision import cls_attention, encode_vision


def test_outputs_match_a_manual_computation_from_the_last_layer_weights(tiny_model):
    tower = tiny_model.model.model.vision_tower
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 64, 64)
    out = encode_vision(tower, pixels, feature_layer=-2)

    reference = tower(pixels, output_hidden_states=True)
    layer = tower.encoder.layers[-1]
    x = layer.layer_norm1(reference.hidden_states[-2])  # the last layer's attention input [B, 1 + N, C]
    q = x @ layer.self_attn.q_proj.weight.T + layer.self_attn.q_proj.bias
    k = x @ layer.self_attn.k_proj.weight.T + layer.self_attn.k_proj.bias
    C = q.shape[-1]
    expected = torch.softmax(q[:, :1] @ k.transpose(1, 2) / math.sqrt(C), dim=-1)[:, 0, 1:]  # CLS row, patch columns

    assert out.grid == (8, 8)
    assert out.features.shape == (2, 64, 32) and out.cls_attn.shape == (2, 64) and out.keys.shape == (2, 64, 32)
    torch.testing.assert_close(out.features, reference.hidden_states[-2][:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(out.last_hidden_state, reference.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(out.keys, k[:, 1:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.cls_attn, expected, rtol=1e-5, atol=1e-7)
    assert bool((out.cls_attn.sum(1) < 1).all()), "the CLS column is dropped, so rows sum to less than 1"


def test_features_are_what_llava_feeds_its_projector(tiny_model):
    torch.manual_seed(2)
    pixels = torch.randn(3, 3, 64, 64)
    out = encode_vision(tiny_model.model.model.vision_tower, pixels, tiny_model.model.config.vision_feature_layer)
    projected = tiny_model.model.model.get_image_features(pixel_values=pixels).pooler_output  # list of [N, H]
    torch.testing.assert_close(tiny_model.model.model.multi_modal_projector(out.features), torch.stack(list(projected)))


def test_cls_attention_treats_heads_as_one_and_uses_the_full_width():
    q, k = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    expected = F.softmax(torch.einsum("bc,bjc->bj", q[:, 0], k) / math.sqrt(12), dim=-1)[:, 1:]
    torch.testing.assert_close(cls_attention(q, k), expected)
    assert cls_attention(q.half(), k.half()).dtype == torch.float32
