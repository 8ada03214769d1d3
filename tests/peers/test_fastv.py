"""FastV inside the LLM: greedy answers equal a plain-torch reference, batches equal samples, provenance per layer."""
import pytest
import torch

import rclib
from rclib.methods.fastv import fastv

MAX_NEW = 8


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate(x, position, theta):
    """Rotary embedding of x [heads, L, d] at integer positions [L]."""
    d = x.shape[-1]
    angle = position[:, None].double() / theta ** (torch.arange(0, d, 2).double() / d)  # [L, d/2]
    cos, sin = torch.cat([angle, angle], -1).cos().float(), torch.cat([angle, angle], -1).sin().float()
    half = torch.cat([-x[..., d // 2:], x[..., :d // 2]], -1)
    return x * cos + half * sin


def reference_layer(layer, x, position, config):
    """One Llama decoder layer in plain torch on one sample x [L, H]: (output, attention [heads, L, L])."""
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    d = config.hidden_size // heads
    a = layer.self_attn
    h = rms_norm(x, layer.input_layernorm.weight, config.rms_norm_eps)
    q = (h @ a.q_proj.weight.T).view(-1, heads, d).transpose(0, 1)
    k = (h @ a.k_proj.weight.T).view(-1, kv_heads, d).transpose(0, 1).repeat_interleave(heads // kv_heads, 0)
    v = (h @ a.v_proj.weight.T).view(-1, kv_heads, d).transpose(0, 1).repeat_interleave(heads // kv_heads, 0)
    theta = config.rope_parameters["rope_theta"]
    q, k = rotate(q, position, theta), rotate(k, position, theta)
    L = x.shape[0]
    logits = q @ k.transpose(1, 2) / d ** 0.5 + torch.full((L, L), float("-inf")).triu(1)
    p = logits.softmax(-1)
    x = x + (p @ v).transpose(0, 1).reshape(L, -1) @ a.o_proj.weight.T
    h = rms_norm(x, layer.post_attention_layernorm.weight, config.rms_norm_eps)
    m = layer.mlp
    return x + (torch.nn.functional.silu(h @ m.gate_proj.weight.T) * (h @ m.up_proj.weight.T)) @ m.down_proj.weight.T, p


def reference_greedy(model, embeds, max_new, forward):
    """Greedy ids from embeds [L, H], recomputing everything at every step without a cache:
    ``forward(sequence [L', H])`` runs the decoder layers (pruning as it likes) and returns their output."""
    llm, config = model.model.model.language_model, model.model.config.text_config
    eos = model.model.generation_config.eos_token_id
    sequence, out = embeds, []
    for _ in range(max_new):
        x = forward(sequence)
        token = int((rms_norm(x[-1], llm.norm.weight, config.rms_norm_eps) @ model.model.lm_head.weight.T).argmax())
        out.append(token)
        if token == eos:
            break
        sequence = torch.cat([sequence, llm.embed_tokens.weight[token][None]])
    return out


def reference_fastv(model, embeds, image_places, layer_k, count, max_new):
    """FastV on one unpadded sample embeds [L, H], recomputing everything at every step without a cache.

    The image places (indices into the prompt) kept from layer K on are chosen once, from the last prompt
    token's head-mean attention in layer K-1, and stay fixed while decoding.
    """
    llm, config = model.model.model.language_model, model.model.config.text_config
    keep = None

    def forward(sequence):
        nonlocal keep
        L = sequence.shape[0]
        position = torch.arange(L)
        x = sequence
        for i, layer in enumerate(llm.layers):
            if i == layer_k:
                if keep is None:  # prefill: decide once
                    scores = attention.mean(0)[-1, image_places]
                    chosen = image_places[scores.topk(count).indices]
                    keep = torch.ones(L, dtype=torch.bool)
                    keep[image_places] = False
                    keep[chosen] = True
                places = torch.cat([torch.nonzero(keep).flatten(), torch.arange(len(keep), L)])
                x, position = x[places], position[places]
            x, attention = reference_layer(layer, x, position, config)
        return x

    return reference_greedy(model, embeds, max_new, forward)


@torch.no_grad()
@pytest.mark.parametrize("layer_k, count", [(2, 5), (1, 20), (3, 1)])
def test_fastv_equals_plain_torch_reference(deep_model, deep_encoded, layer_k, count):
    ids = deep_model.generate_inside(deep_encoded, "fastv", count, MAX_NEW, layer=layer_k)[1]
    embeds, mask = deep_model.llm_inputs(deep_encoded, rclib.compress(deep_encoded.features, method="full"))
    places = deep_model.image_places(deep_encoded, embeds.shape[1])
    for b in range(len(deep_encoded)):
        real = mask[b].bool()
        image = torch.nonzero(places[b][real] >= 0).flatten()
        expected = reference_fastv(deep_model, embeds[b][real], image, layer_k, count, MAX_NEW)
        assert len(expected) > 2, "the model should say something"
        pad = [deep_model.pad_token_id] * (ids.shape[1] - len(expected))
        assert ids[b].tolist() == expected + pad, f"sample {b}"


def test_fastv_keeping_everything_equals_transformers_generate(deep_model, deep_encoded):
    assert len(set(deep_encoded.attention_mask.sum(1).tolist())) == 3, "prompts of different lengths: padding"
    ours = deep_model.generate_inside(deep_encoded, "fastv", deep_encoded.n_tokens, MAX_NEW)[1]
    reference = deep_model.generate_ids(deep_encoded, deep_model.compress(deep_encoded, "full"), MAX_NEW)
    assert torch.equal(ours, reference)


def test_fastv_batch_equals_single_samples_and_layer_provenance(deep_model, deep_encoded, tiny_images, questions):
    batch = deep_model.run(deep_encoded, "fastv", 7, MAX_NEW)
    N = deep_encoded.n_tokens
    seen = batch.layer_seen
    assert seen.shape == (3, 4, N)  # 4 decoder layers: the paper's K = 2 of 32 moves to K = 1
    assert seen[:, :1].all() and seen[:, 1:].sum(2).tolist() == [[7, 7, 7]] * 3
    assert torch.equal(seen[:, 1], seen[:, 3]) and torch.equal(batch.result.fate == rclib.Fate.KEPT, seen[:, 3])
    assert batch.result.n_output.tolist() == [7, 7, 7] and batch.seconds.keys() == {"generate"}
    attention = batch.result.scores["llm_attention_layer0"]
    for b in range(3):  # the kept tokens are the 7 most attended
        assert torch.equal(seen[b, 1], attention[b] >= attention[b].topk(7).values[-1])
        single = deep_model.answer(tiny_images[b], questions[b], method="fastv", budget=7, max_new_tokens=MAX_NEW)
        assert single.texts[0] == batch.texts[b]
        assert torch.equal(single.layer_seen[0], seen[b])


def test_fastv_ratio_and_per_sample_counts(deep_model, deep_encoded):
    run = deep_model.run(deep_encoded, "fastv", None, 2, ratio=0.75)
    assert run.result.n_output.tolist() == [16, 16, 16]  # 64 image tokens, a quarter kept
    default = deep_model.run(deep_encoded, "fastv", None, 2)
    assert default.result.n_output.tolist() == [7, 7, 7]  # 64/576 of 64 tokens


def test_fastv_refuses_bad_input(deep_model, deep_encoded, tiny_model):
    with pytest.raises(ValueError, match="inside the LLM"):
        rclib.compress(deep_encoded.features, method="fastv")
    with pytest.raises(ValueError, match="not both"):
        deep_model.run(deep_encoded, "fastv", 8, ratio=0.5)
    with pytest.raises(ValueError, match="ratio"):
        deep_model.run(deep_encoded, "fastv", ratio=1.0)
    with pytest.raises(ValueError, match=r"1\.\.3"):
        deep_model.run(deep_encoded, "fastv", 8, layer=4)
    with pytest.raises(ValueError, match=r"1\.\.1"):  # the shared tiny model has 2 decoder layers
        tiny_model.run(deep_encoded, "fastv", 8, layer=2)
    with pytest.raises(ValueError, match="budget must be a positive number"):
        deep_model.run(deep_encoded, "fastv", 0)
    with pytest.raises(ValueError, match="no option"):
        deep_model.run(deep_encoded, "fastv", 8, k=2)


def test_fastv_default_layer_keeps_the_papers_relative_depth(deep_encoded):
    plan = fastv(deep_encoded.features, budget=7)  # the paper's K = 2 of LLaVA-1.5's 32 decoder layers
    assert [plan.for_depth(n).layer for n in (32, 64, 40, 4, 2)] == [2, 4, 2, 1, 1]
    explicit = fastv(deep_encoded.features, budget=7, layer=2)
    assert explicit.for_depth(4) == explicit and explicit.for_depth(64).layer == 2, "an explicit K is exact"
