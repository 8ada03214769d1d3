"""rclib.cost: the prefill formulas against a hand computation, and the measured prefill."""
import pytest

from rclib import cost

TINY = cost.DecoderArch(layers=2, width=4, mlp_width=6, vocab=10, heads=2, bytes_per_value=2)


def test_flops_by_hand():
    # n = 3 tokens, per layer: q,k,v,o 4 * 2*3*4*4 = 384; QK^T and AV 2 * 2*3*3*4 = 144;
    # gate, up, down 3 * 2*3*4*6 = 432 -> 960; two layers 1920; LM head on the last token 2*4*10 = 80.
    assert cost.prefill_flops(3, TINY) == 2000


def test_memory_by_hand():
    assert cost.kv_cache_bytes(3, TINY) == 2 * 2 * 3 * 4 * 2  # K and V, 2 layers, 3 tokens, width 4, fp16
    # per layer 10*3*4 + 2*2*3*3 + 3*3*6 = 120 + 36 + 54 = 210 values, 2 layers, 2 bytes
    assert cost.activation_bytes(3, TINY) == 840
    # per layer 4*16 + 3*4*6 + 2*4 = 144 parameters, 2 layers; embeddings + LM head 2*10*4; final norm 4
    assert cost.weight_bytes(TINY) == (2 * 144 + 80 + 4) * 2


def test_vicuna_7b_matches_its_known_size_and_the_papers_flops():
    assert cost.weight_bytes() / 2 == 6_738_415_616  # LLaMA-7B's parameter count
    full, rc = cost.cost_row(576), cost.cost_row(58)
    assert full["TFLOPs"] == pytest.approx(8.5, rel=0.02)  # the paper: 8.5 -> 1.5 TFLOPs
    assert rc["TFLOPs"] == pytest.approx(1.5, rel=0.05)
    assert full["total_tokens"] == 576 + cost.LLAVA_TEXT_TOKENS


def test_arch_from_a_transformers_config(tiny_model):
    arch = cost.DecoderArch.from_config(tiny_model.model.config.text_config)
    assert (arch.layers, arch.width, arch.mlp_width, arch.heads) == (2, 32, 64, 4)


def test_measure_prefill_on_the_model_at_hand(tiny_model, tiny_images):
    encoded = tiny_model.encode(tiny_images[:2], ["what color ?", "what shape ?"])
    seconds = cost.measure_prefill(tiny_model, encoded, tiny_model.compress(encoded, "rc"), repeats=2)
    assert 0 < seconds < 10
