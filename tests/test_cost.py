"""rclib.cost: the prefill formulas against a hand computation and torch's FlopCounterMode, and the measured prefill."""
import pytest

from rclib import cost

TINY = cost.DecoderArch(layers=2, width=4, mlp_width=6, vocab=10, heads=2, kv_heads=2, bytes_per_value=2)
TINY_GQA = cost.DecoderArch(layers=2, width=4, mlp_width=6, vocab=10, heads=2, kv_heads=1, bytes_per_value=2)


def test_flops_by_hand():
    # n = 3 tokens, per layer: q,k,v,o 4 * 2*3*4*4 = 384; QK^T and AV 2 * 2*3*3*4 = 144;
    # gate, up, down 3 * 2*3*4*6 = 432 -> 960; two layers 1920; LM head on the last token 2*4*10 = 80.
    assert cost.prefill_flops(3, TINY) == 2000
    # one key/value head of width 2: k and v cost 2 * 2*3*4*2 = 96 instead of 192 per layer
    assert cost.prefill_flops(3, TINY_GQA) == 2000 - 2 * 96


def test_memory_by_hand():
    assert cost.kv_cache_bytes(3, TINY) == 2 * 2 * 3 * 4 * 2  # K and V, 2 layers, 3 tokens, width 4, fp16
    assert cost.kv_cache_bytes(3, TINY_GQA) == 2 * 2 * 3 * 2 * 2  # key/value width 2
    # per layer 10*3*4 + 2*2*3*3 + 3*3*6 = 120 + 36 + 54 = 210 values, 2 layers, 2 bytes
    assert cost.activation_bytes(3, TINY) == 840
    # per layer 4*16 + 3*4*6 + 2*4 = 144 parameters, 2 layers; embeddings + LM head 2*10*4; final norm 4
    assert cost.weight_bytes(TINY) == (2 * 144 + 80 + 4) * 2


def test_schedule_gives_each_layer_its_tokens():
    assert cost.layer_tokens(5, 2, 3) == [7, 7, 7]
    assert cost.layer_tokens(((0, 10), (2, 4)), 1, 4) == [11, 11, 5, 5]
    per_layer = cost.layer_tokens(((0, 9), (1, 3)), 0, 2)
    halves = (cost.prefill_flops(9, TINY) + cost.prefill_flops(3, TINY)) / 2  # one LM head in each
    assert cost.prefill_flops(per_layer, TINY) == halves
    assert cost.kv_cache_bytes(per_layer, TINY) == (cost.kv_cache_bytes(9, TINY) + cost.kv_cache_bytes(3, TINY)) / 2
    for bad in (((1, 5),), ((0, 5), (0, 3)), ((0, 5), (4, 3)), ((0, -1),)):
        with pytest.raises(ValueError, match="schedule|token counts"):
            cost.layer_tokens(bad, 0, 4)
    with pytest.raises(ValueError, match="one token count per layer"):
        cost.prefill_flops([3, 3, 3], TINY)


def test_vicuna_sizes_and_the_papers_flops():
    assert cost.weight_bytes() / 2 == 6_738_415_616  # LLaMA-7B's parameter count
    assert cost.weight_bytes(cost.VICUNA_13B) / 2 == 13_015_864_320  # LLaMA-13B's
    assert cost.weight_bytes(cost.TINYLLAMA_1B) / 2 == 1_100_048_384  # TinyLlama-1.1B's
    full, rc = cost.cost_row(576), cost.cost_row(58)
    assert full["TFLOPs"] == pytest.approx(8.5, rel=0.02)  # the paper: 8.5 -> 1.5 TFLOPs
    assert rc["TFLOPs"] == pytest.approx(1.5, rel=0.05)
    assert full["total_tokens"] == 576 + cost.LLAVA_TEXT_TOKENS


def test_pruning_inside_the_llm_pays_for_the_early_layers():
    fastv = cost.cost_row(cost.fastv_schedule(64))
    before = cost.cost_row(64)
    assert fastv["image_tokens"] == 64 and fastv["mean_image_tokens"] == (2 * 576 + 30 * 64) / 32
    assert fastv["TFLOPs"] > before["TFLOPs"] and fastv["KV cache (MiB)"] > before["KV cache (MiB)"]
    # SparseVLM's released counts at 64 (66, 30, 17 before layers 3, 7, 16) plus its recycled cluster means
    assert cost.SPARSEVLM_7B_SCHEDULES[64] == ((0, 576), (3, 66 + 16), (7, 30 + 2), (16, 17 + 1))
    for budget in (64, 128, 192):  # PyramidDrop's budget is its mean over the layers; DART's K is FastV's
        assert cost.cost_row(cost.method_schedule("pdrop", budget))["mean_image_tokens"] == pytest.approx(budget, abs=1)
        assert cost.method_schedule("dart", budget) == cost.fastv_schedule(budget)
    assert cost.method_schedule("vispruner", 64) == ((0, 64),) and cost.method_schedule("full", None) == ((0, 576),)
    with pytest.raises(ValueError, match="chooses K per image"):
        cost.method_schedule("rc", None)


@pytest.mark.parametrize("arch", [TINY, TINY_GQA])
def test_formula_equals_torchs_flop_counter(arch):
    for n in (1, 7):
        assert cost.counted_prefill_flops(arch, n) == cost.prefill_flops(n, arch)


def test_roofline_explains_the_papers_prefill_times():
    a100 = {"peak_flops": 312e12, "bandwidth": 2.0e12}  # A100 80 GB: dense fp16 tensor cores, HBM2e
    full = cost.roofline_seconds(cost.prefill_flops(636), cost.weight_bytes(), **a100)
    rc = cost.roofline_seconds(cost.prefill_flops(118), cost.weight_bytes(), **a100)
    assert full == pytest.approx(cost.prefill_flops(636) / 312e12)  # compute-bound: 27 ms (paper: 30.3)
    assert rc == pytest.approx(cost.weight_bytes() / 2.0e12)  # weight-bound: 6.7 ms (paper: 9.2)


def test_arch_from_a_transformers_config(tiny_model):
    arch = cost.DecoderArch.from_config(tiny_model.model.config.text_config)
    assert (arch.layers, arch.width, arch.mlp_width, arch.heads, arch.kv_heads) == (2, 32, 64, 4, 2)


def test_measure_prefill_on_the_model_at_hand(tiny_model, tiny_images):
    encoded = tiny_model.encode(tiny_images[:2], ["what color ?", "what shape ?"])
    seconds = cost.measure_prefill(tiny_model, encoded, tiny_model.compress(encoded, "rc"), repeats=2)
    assert 0 < seconds < 10
    with pytest.raises(ValueError, match="repeats"):
        cost.measure_prefill(tiny_model, encoded, tiny_model.compress(encoded, "rc"), repeats=0)
