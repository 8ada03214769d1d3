"""What the LLM's prefill costs at n visual + text tokens: FLOPs, KV cache, activations, from the architecture.

For a LLaMA-style decoder (L layers, width d, SwiGLU MLP width m, vocabulary V, h heads) reading
n = n_image + n_text tokens, counting 2 FLOPs per multiply-add:

    FLOPs       = L * (8 n d^2  +  4 n^2 d  +  6 n d m)  +  2 d V
                       q,k,v,o     QK^T, AV    gate,up,down   LM head on the last position (what
                                                              generation computes in the prefill)
    KV cache    = 2 * L * n * d * bytes                       keys and values of every layer
    activations = L * (10 n d + 2 h n^2 + 3 n m) * bytes      every intermediate tensor of the forward,
                                                              unfused attention (scores and softmax)

The activation count takes each layer's tensors as a framework without buffer reuse or fused
attention would hold them (norm, q, k, v, attention output, o_proj, residual, norm, down, residual:
10 n d; scores and probabilities: 2 h n^2; gate, up, gated product: 3 n m). The attention square is
counted in full, as dense kernels compute it. On Vicuna-7B with 60 text tokens this gives 8.45 TFLOPs
and 4.35 GiB of activations at 576 image tokens, 1.54 TFLOPs and 0.57 GiB at 58 (the paper reports
8.5 -> 1.5 TFLOPs and 4.1 -> 0.49 GB without stating its accounting, so compare ratios).

:func:`measure_prefill` times the prefill of the model at hand on a compressed input.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DecoderArch:
    layers: int = 32  # Vicuna-7B (LLaVA-1.5-7B's LLM)
    width: int = 4096  # d
    mlp_width: int = 11008  # m, SwiGLU intermediate size
    vocab: int = 32000  # V
    heads: int = 32  # h
    bytes_per_value: int = 2  # float16

    @staticmethod
    def from_config(text_config, bytes_per_value: int = 2) -> DecoderArch:
        """The architecture of a transformers Llama config (e.g. ``model.config.text_config``)."""
        return DecoderArch(text_config.num_hidden_layers, text_config.hidden_size, text_config.intermediate_size,
                           text_config.vocab_size, text_config.num_attention_heads, bytes_per_value)


VICUNA_7B = DecoderArch()
LLAVA_TEXT_TOKENS = 60  # system prompt, chat roles and a short question in LLaVA-1.5's vicuna_v1 template
LLAVA_IMAGE_TOKENS = 576  # LLaVA-1.5: 24 x 24 patches of CLIP ViT-L/14 at 336 px


def prefill_flops(n_tokens: int, arch: DecoderArch = VICUNA_7B) -> float:
    """FLOPs of one prefill over ``n_tokens`` tokens (see the module docstring)."""
    n, d, m = n_tokens, arch.width, arch.mlp_width
    per_layer = 8 * n * d**2 + 4 * n**2 * d + 6 * n * d * m
    return float(arch.layers * per_layer + 2 * d * arch.vocab)


def kv_cache_bytes(n_tokens: int, arch: DecoderArch = VICUNA_7B) -> float:
    """Bytes of the keys and values every layer keeps for ``n_tokens`` tokens."""
    return float(2 * arch.layers * n_tokens * arch.width * arch.bytes_per_value)


def activation_bytes(n_tokens: int, arch: DecoderArch = VICUNA_7B) -> float:
    """Bytes of every intermediate tensor of one prefill forward (see the module docstring)."""
    n, d, m = n_tokens, arch.width, arch.mlp_width
    per_layer = 10 * n * d + 2 * arch.heads * n**2 + 3 * n * m
    return float(arch.layers * per_layer * arch.bytes_per_value)


def weight_bytes(arch: DecoderArch = VICUNA_7B) -> float:
    """Bytes of the decoder's weights: per layer 4 d^2 + 3 d m + 2 d (norms); embeddings, LM head, final norm."""
    d = arch.width
    params = arch.layers * (4 * d**2 + 3 * d * arch.mlp_width + 2 * d) + 2 * arch.vocab * d + d
    return float(params * arch.bytes_per_value)


def cost_row(n_image_tokens: int, n_text_tokens: int = LLAVA_TEXT_TOKENS, arch: DecoderArch = VICUNA_7B) -> dict:
    """The computed prefill cost at ``n_image_tokens`` visual tokens, in readable units."""
    n = n_image_tokens + n_text_tokens
    return {
        "image_tokens": n_image_tokens,
        "total_tokens": n,
        "TFLOPs": prefill_flops(n, arch) / 1e12,
        "KV cache (MiB)": kv_cache_bytes(n, arch) / 2**20,
        "activations (GiB)": activation_bytes(n, arch) / 2**30,
        "weights + KV + activations (GiB)": (weight_bytes(arch) + kv_cache_bytes(n, arch) + activation_bytes(n, arch))
        / 2**30,
    }


@torch.no_grad()
def measure_prefill(model, encoded, result, repeats: int = 5) -> float:
    """Median wall seconds of the LLM prefill (projector excluded) of ``model`` on the compressed input.

    model: a :class:`~rclib.models.CompressedLlava`; encoded, result: its encoder output and a
    compression of it. One untimed warm-up run precedes the ``repeats`` timed ones.
    """
    assert repeats >= 1, f"repeats must be >= 1, got {repeats}"
    embeds, mask = model.llm_inputs(encoded, result)
    language_model = model.model.model.language_model
    synchronize = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    seconds = []
    for _ in range(repeats + 1):
        synchronize()
        start = time.perf_counter()
        language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=True)
        synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:])
