"""DART and PyramidDrop inside the LLM: greedy answers equal plain-torch references, batches equal samples, the
visual tokens each layer read, PyramidDrop's budget plan."""
import pytest
import torch
from test_fastv import reference_greedy, reference_layer, rms_norm, rotate
from test_sparsevlm import reference_top

import rclib
from rclib.methods.dart import dart
from rclib.methods.pdrop import budget_plan, pdrop

MAX_NEW = 8


def reference_keys(layer, x, position, config):
    """The rotated keys [kv_heads, L, d] of one Llama decoder layer on one sample x [L, H]."""
    d = config.hidden_size // config.num_attention_heads
    h = rms_norm(x, layer.input_layernorm.weight, config.rms_norm_eps)
    k = (h @ layer.self_attn.k_proj.weight.T).view(len(x), config.num_key_value_heads, d).transpose(0, 1)
    return rotate(k, position, config.rope_parameters["rope_theta"])


def reference_pruned(model, embeds, image_places, stages, max_new):
    """An inside-LLM method on one unpadded sample embeds [L, H], recomputing everything at every step without a
    cache. stages: {layer: decide(x, x_in, position, image) -> places of x kept}, decided once at prefill
    (x: the input of that layer, x_in: the input of the layer before, image: which places of x are image)."""
    llm, config = model.model.model.language_model, model.model.config.text_config
    plans = {}

    def forward(sequence):
        x, x_in, position = sequence, None, torch.arange(len(sequence))
        origin = torch.arange(len(sequence))  # the original place of each row of x
        for i, layer in enumerate(llm.layers):
            if i in stages:
                image = torch.isin(origin, image_places)
                if i not in plans:  # prefill: decide once, in original places
                    plans[i] = set(origin[stages[i](x, x_in, position, image)].tolist())
                rows = [j for j in range(len(x)) if not image[j] or int(origin[j]) in plans[i]]
                x, position, origin = x[rows], position[rows], origin[rows]
            x_in = x
            x, _ = reference_layer(layer, x, position, config)
        return x

    return reference_greedy(model, embeds, max_new, forward)


def dart_stage(model, layer_k, count, pivot_image=4, pivot_text=4):
    llm, config = model.model.model.language_model, model.model.config.text_config

    def decide(x, x_in, position, image):
        norm = reference_keys(llm.layers[layer_k - 1], x_in, position, config).abs().sum((0, 2))
        img = torch.nonzero(image).flatten().tolist()
        text = list(range(img[-1] + 1, len(x)))
        image_pivots = [img[j] for j in reference_top(norm[img], min(pivot_image, count))]
        pivots = sorted(image_pivots + [text[j] for j in reference_top(norm[text], pivot_text)])
        normed = rms_norm(x, llm.norm.weight, config.rms_norm_eps)
        rest, chosen = count - len(image_pivots), set(image_pivots)
        for p, pivot in enumerate(pivots):
            share = rest // len(pivots) + (p < rest % len(pivots))
            left = [j for j in img if j not in chosen]
            similarity = torch.nn.functional.cosine_similarity(normed[pivot][None], normed[left], dim=-1)
            chosen |= {left[j] for j in reference_top(-similarity, share)}
        return sorted(chosen)

    return decide


def pdrop_stage(model, layer, count):
    llm, config = model.model.model.language_model, model.model.config.text_config

    def decide(x, x_in, position, image):
        _, attention = reference_layer(llm.layers[layer], x, position, config)  # the layer's own attention
        img = torch.nonzero(image).flatten().tolist()
        return sorted(img[j] for j in reference_top(attention.mean(0)[-1, img], count))

    return decide


def check_against_reference(model, encoded, ids, stages):
    embeds, mask = model.llm_inputs(encoded, rclib.compress(encoded.features, method="full"))
    places = model.image_places(encoded, embeds.shape[1])
    for b in range(len(encoded)):
        real = mask[b].bool()
        image = torch.nonzero(places[b][real] >= 0).flatten()
        expected = reference_pruned(model, embeds[b][real], image, stages, MAX_NEW)
        assert len(expected) > 2, "the model should say something"
        assert ids[b].tolist() == expected + [model.pad_token_id] * (ids.shape[1] - len(expected)), f"sample {b}"


@torch.no_grad()
@pytest.mark.parametrize("layer_k, count", [(2, 11), (1, 30), (3, 3)])
def test_dart_equals_plain_torch_reference(deep_model, deep_encoded, layer_k, count):
    ids = deep_model.generate_inside(deep_encoded, "dart", count, MAX_NEW, layer=layer_k)[1]
    check_against_reference(deep_model, deep_encoded, ids, {layer_k: dart_stage(deep_model, layer_k, count)})


@torch.no_grad()
def test_pdrop_equals_plain_torch_reference(deep_model, deep_encoded):
    run = deep_model.run(deep_encoded, "pdrop", None, MAX_NEW, ratio=0.5, layers=(1, 3))
    assert run.tokens_per_layer.tolist() == [[64, 32, 32, 16]] * 3  # int(64 * 0.5), int(64 * 0.25)
    stages = {1: pdrop_stage(deep_model, 1, 32), 3: pdrop_stage(deep_model, 3, 16)}
    ids = deep_model.generate_inside(deep_encoded, "pdrop", None, MAX_NEW, ratio=0.5, layers=(1, 3))[1]
    check_against_reference(deep_model, deep_encoded, ids, stages)


@pytest.mark.parametrize("method, options", [("dart", {}), ("pdrop", {"ratio": 0.4})])
def test_batch_equals_single_samples_and_counts_per_layer(deep_model, deep_encoded, tiny_images, questions, method,
                                                           options):
    budget = 9 if method == "dart" else None
    batch = deep_model.run(deep_encoded, method, budget, MAX_NEW, **options)
    per_layer = batch.tokens_per_layer
    assert per_layer.shape == (3, 4) and bool((per_layer[:, 0] == 64).all())
    assert torch.equal(per_layer, batch.layer_seen.sum(2)), "no recycling: the visual tokens are image tokens"
    assert torch.equal(batch.equivalent_tokens, per_layer.float().mean(1))
    expected = [64, 9, 9, 9] if method == "dart" else [64, 25, 10, 4]  # K = 2 of 32 -> 1 of 4; int(64 * 0.4^s)
    assert per_layer.tolist() == [expected] * 3
    for b in range(3):
        single = deep_model.answer(tiny_images[b], questions[b], method=method, budget=budget, max_new_tokens=MAX_NEW,
                                   **options)
        assert single.texts[0] == batch.texts[b] and torch.equal(single.layer_seen[0], batch.layer_seen[b])


def test_pdrop_budget_is_the_mean_tokens_over_the_layers():
    layers, counts = budget_plan(576, 32, 64, None)  # LLaVA-1.5-7B at 64: stages from layer 1 on
    assert layers == (1, 2, 3) and counts == (236, 97, 40)
    assert budget_plan(576, 32, 288, None)[0] == (8, 16, 24), "the paper's layers once the budget allows them"
    for budget in (64, 128, 192, 288):
        schedule = pdrop(torch.zeros(1, 576, 1), budget=budget).schedule(32)
        assert sum(schedule) / 32 == pytest.approx(budget, abs=1.5)
    tiny = pdrop(torch.zeros(1, 576, 1), budget=1).schedule(32)  # below one layer's worth: 1 token, said so
    assert tiny == [576] + [1] * 31
    released = pdrop(torch.zeros(1, 576, 1), ratio=0.5).schedule(32)
    assert released == [576] * 8 + [288] * 8 + [144] * 8 + [72] * 8


def test_dart_and_pdrop_refuse_bad_input(deep_model, deep_encoded):
    with pytest.raises(ValueError, match="inside the LLM"):
        rclib.compress(deep_encoded.features, method="dart")
    with pytest.raises(ValueError, match="not both"):
        deep_model.run(deep_encoded, "pdrop", 8, ratio=0.5)
    with pytest.raises(ValueError, match="lambda"):
        deep_model.run(deep_encoded, "pdrop", ratio=0.0)
    with pytest.raises(ValueError, match="strictly ascending"):
        deep_model.run(deep_encoded, "pdrop", layers=(2, 1))
    with pytest.raises(ValueError, match=r"1\.\.3"):
        deep_model.run(deep_encoded, "pdrop", layers=(1, 4))
    with pytest.raises(ValueError, match="pivot_image >= 1"):
        deep_model.run(deep_encoded, "dart", 8, pivot_image=0)
    with pytest.raises(ValueError, match=r"1\.\.3"):
        deep_model.run(deep_encoded, "dart", 8, layer=4)


def test_dart_default_layer_keeps_the_released_relative_depth(deep_encoded):
    plan = dart(deep_encoded.features, budget=7)
    assert [plan.for_depth(n).layer for n in (32, 40, 4, 2)] == [2, 2, 1, 1]
