"""LLaVA-OneVision through the family interface: a SigLIP tower without [CLS] (importance from received attention),
SigLIP's own text tower, anyres_max shrinking, identity with transformers, every method, batch == single."""
import math

import pytest
import torch
from family_checks import (QUESTIONS, assert_batch_equals_single, assert_full_is_transformers,
                           assert_llm_input_is_transformers)

from rclib.methods import METHODS

MAX_NEW = 6


def test_full_is_identical_to_transformers_generate(ov_model, tiled_images):
    encoded = assert_full_is_transformers(ov_model, tiled_images, MAX_NEW)
    assert len(set(encoded.token_counts.tolist())) == 3, "three tile layouts, three token counts"


def test_shrunk_tiles_are_what_the_llm_reads(ov_model, tiled_images):
    """The square image's 2 x 2 tiles exceed anyres_max: the LLM input of all tokens is still transformers' own."""
    encoded = ov_model.encode(tiled_images[2:], QUESTIONS[2:])
    tiles = int(encoded.token_counts[0]) - 64
    assert tiles < 4 * 64, "the 2 x 2 tiles were shrunk"
    assert_llm_input_is_transformers(ov_model, tiled_images[2:], encoded)


def test_importance_is_the_attention_each_patch_receives(ov_model):
    from rclib.models.vision import encode_vision

    tower = ov_model.model.model.vision_tower
    torch.manual_seed(4)
    pixels = torch.randn(2, 3, 64, 64)
    out = encode_vision(tower, pixels, -1, has_cls=False)
    reference = tower(pixels, output_hidden_states=True)
    layer = tower.encoder.layers[-1]
    x = layer.layer_norm1(reference.hidden_states[-2])  # [B, N, C] the last layer's attention input
    q, k = layer.self_attn.q_proj(x), layer.self_attn.k_proj(x)
    heads = tower.config.num_attention_heads
    qh, kh = (t.view(2, 64, heads, -1).transpose(1, 2) for t in (q, k))  # [B, h, N, d]
    weights = (qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1])).softmax(-1)  # [B, h, N, N]
    torch.testing.assert_close(out.cls_attn_head_mean, weights.mean(2).mean(1))
    wide = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1).mean(1)  # one head of width C
    torch.testing.assert_close(out.cls_attn, wide)
    torch.testing.assert_close(out.features, reference.hidden_states[-1], rtol=0, atol=0)
    assert out.features.shape[1] == 64, "every token is a patch"


def test_a_patch_enters_siglips_space_through_its_pooling_head(tiny_siglip_dir):
    """With one patch to pool, SigLIP's attention pooling returns what rclib's per-patch projection gives."""
    from transformers import AutoTokenizer, SiglipModel

    from rclib.models.text import SiglipTextTower

    siglip = SiglipModel.from_pretrained(tiny_siglip_dir).eval()
    tower = SiglipTextTower(siglip, AutoTokenizer.from_pretrained(tiny_siglip_dir))
    tokens = torch.randn(2, 5, 32)
    for j in range(5):
        torch.testing.assert_close(tower.project_vision(tokens)[:, j], siglip.vision_model.head(tokens[:, j:j + 1]))
    texts = ["what colour is the circle ?"]
    ids = tower.tokenizer(texts, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
    expected = siglip.get_text_features(input_ids=ids)  # SigLIP reads its padded text unmasked, as it was trained
    expected = getattr(expected, "pooler_output", expected)
    torch.testing.assert_close(tower.embed_text(texts), torch.nn.functional.normalize(expected, dim=-1))


@pytest.mark.parametrize("method", [m for m in METHODS if "target" not in METHODS[m].needs and m != "pool"])
def test_batch_equals_single_for_every_method(ov_model, tiled_images, method):
    assert_batch_equals_single(ov_model, tiled_images, method, None if METHODS[method].adaptive else 40)


def test_a_clip_text_tower_is_refused_with_the_reason(tiny_onevision_dir, tiny_clip_dir):
    from rclib.models import load

    with pytest.raises(ValueError, match="siglip text tower, but the text encoder given is a clip"):
        load(tiny_onevision_dir, text_encoder=tiny_clip_dir, device="cpu")
