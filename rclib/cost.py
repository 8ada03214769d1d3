"""What the LLM's prefill costs at n visual + text tokens: FLOPs, KV cache, activations, from the architecture.

For a LLaMA-style decoder (L layers, width d, key/value width d_kv = d * kv_heads / heads, SwiGLU MLP
width m, vocabulary V, h heads), layer l reading n_l tokens, counting 2 FLOPs per multiply-add:

    FLOPs       = sum_l (4 n d^2 + 4 n d d_kv  +  4 n^2 d  +  6 n d m)  +  2 d V
                         q, o      k, v          QK^T, AV    gate,up,down   LM head on the last position
                                                                            (what generation computes)
    KV cache    = sum_l 2 n d_kv * bytes                     keys and values of every layer
    activations = sum_l (8 n d + 2 n d_kv + 2 h n^2 + 3 n m) * bytes
                                                             every intermediate tensor of the forward,
                                                             unfused attention (scores and softmax)

with n = n_l in each term. The activation count takes each layer's tensors as a framework without
buffer reuse or fused attention would hold them (norm, q, attention output, o_proj, residual, norm,
down, residual: 8 n d; k, v: 2 n d_kv; scores and probabilities: 2 h n^2; gate, up, gated product:
3 n m). The attention square is counted in full, as dense kernels compute it and as torch's
``FlopCounterMode`` counts it (:func:`counted_prefill_flops` checks the formula against it).

Methods that compress before the LLM give every layer the same n; methods that prune inside the LLM
(FastV, SparseVLM, DART, PyramidDrop) pay for all tokens in the early layers: a *schedule* ``((0, 576), (2, 64))``
says "576 image tokens from layer 0, 64 from layer 2 on" (:func:`layer_tokens`). A method's cost in tokens is
the visual tokens each layer reads and their mean over the layers, its *equivalent tokens*: the run reports
them (``CompressionResult.layer_counts``, ``Run.tokens_per_layer``), :func:`method_schedule` computes them
from a method's own plan for any architecture.

On Vicuna-7B with 60 text tokens this gives 8.45 TFLOPs and 4.35 GiB of activations at 576 image
tokens, 1.54 TFLOPs and 0.57 GiB at 58: the paper reports 8.5 -> 1.5 TFLOPs and 4.1 -> 0.49 GB without
stating its accounting. Its measured prefill, 30.3 -> 9.2 ms on an A100, shrinks 3.3x where the FLOPs
shrink 5.5x: at 118 tokens the prefill is bound by reading the 13.5 GB of weights, not by arithmetic
(:func:`roofline_seconds`).

:func:`measure_prefill` times the prefill of the model at hand on a compressed input.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rclib.methods import METHODS
from rclib.methods.pdrop import PDropPruner
from rclib.methods.pdrop import schedule as stage_schedule
from rclib.methods.sparsevlm import RELEASED_COUNTS, SparseVLMPruner, token_schedule


@dataclass(frozen=True)
class DecoderArch:
    layers: int = 32  # Vicuna-7B (LLaVA-1.5-7B's LLM)
    width: int = 4096  # d
    mlp_width: int = 11008  # m, SwiGLU intermediate size
    vocab: int = 32000  # V
    heads: int = 32  # h, query heads
    kv_heads: int = 32  # key/value heads (grouped-query attention when fewer than heads)
    bytes_per_value: int = 2  # float16

    @property
    def kv_width(self) -> int:
        """d_kv: the width of each layer's keys (and values)."""
        return self.width * self.kv_heads // self.heads

    @staticmethod
    def from_config(text_config, bytes_per_value: int = 2) -> DecoderArch:
        """The architecture of a transformers Llama config (e.g. ``model.config.text_config``)."""
        heads = text_config.num_attention_heads
        return DecoderArch(text_config.num_hidden_layers, text_config.hidden_size, text_config.intermediate_size,
                           text_config.vocab_size, heads, getattr(text_config, "num_key_value_heads", None) or heads,
                           bytes_per_value)

    def llama_config(self):
        """A transformers ``LlamaConfig`` of this shape (to build a random-weight model of it)."""
        from transformers import LlamaConfig

        return LlamaConfig(hidden_size=self.width, intermediate_size=self.mlp_width, num_hidden_layers=self.layers,
                           num_attention_heads=self.heads, num_key_value_heads=self.kv_heads, vocab_size=self.vocab,
                           max_position_embeddings=4096)


VICUNA_7B = DecoderArch()
VICUNA_13B = DecoderArch(layers=40, width=5120, mlp_width=13824, heads=40, kv_heads=40)  # LLaVA-1.5-13B's LLM
TINYLLAMA_1B = DecoderArch(layers=22, width=2048, mlp_width=5632, heads=32, kv_heads=4)  # TinyLlama-1.1B
ARCHS = {"7b": VICUNA_7B, "13b": VICUNA_13B, "tinyllama": TINYLLAMA_1B}
LLAVA_TEXT_TOKENS = 60  # system prompt, chat roles and a short question in LLaVA-1.5's vicuna_v1 template
LLAVA_IMAGE_TOKENS = 576  # LLaVA-1.5: 24 x 24 patches of CLIP ViT-L/14 at 336 px

Schedule = Sequence[tuple[int, int]]  # ((from_layer, image_tokens), ...): what each layer reads from that layer on

def fastv_schedule(k: int, arch: DecoderArch = VICUNA_7B) -> Schedule:
    """FastV keeping ``k`` image tokens from its layer K on, as rclib's FastV places K in ``arch``."""
    return method_schedule("fastv", k, arch)


def method_schedule(method: str, budget: int | None, arch: DecoderArch = VICUNA_7B,
                    n_image: int = LLAVA_IMAGE_TOKENS, **options) -> Schedule:
    """The schedule of visual tokens ``method`` gives the decoder layers of ``arch`` at ``budget`` (its options as
    given): the method's own plan for that depth inside the LLM (SparseVLM's recycled tokens counted), the budget
    in every layer before it (all tokens for ``full``; an adaptive method needs a budget here)."""
    spec = METHODS[method]
    if spec.placement == "before_llm":
        if spec.takes_budget and budget is None:
            raise ValueError(f"{method!r} chooses K per image: give the budget (or the K it chose) to cost it")
        return ((0, budget if spec.takes_budget else n_image),)
    plan = spec.fn(torch.zeros(1, n_image, 1), budget=budget, **options).for_depth(arch.layers)
    if isinstance(plan, SparseVLMPruner):
        per_layer = token_schedule(n_image, arch.layers, plan.layers, plan.counts, plan.recycle_share,
                                   plan.cluster_share)
    elif isinstance(plan, PDropPruner):
        per_layer = plan.schedule(arch.layers)
    else:  # FastV, DART: one pruning step
        per_layer = stage_schedule(n_image, arch.layers, plan.layers, (int(plan.count.max()),))
    return tuple((layer, n) for layer, n in enumerate(per_layer) if layer == 0 or n != per_layer[layer - 1])


# rclib's SparseVLM plans on LLaVA-1.5-7B at the budgets of the released code's schedules
SPARSEVLM_7B_SCHEDULES = {k: method_schedule("sparsevlm", k) for k in RELEASED_COUNTS}


def layer_tokens(image_tokens: int | Schedule, n_text: int, layers: int) -> list[int]:
    """Tokens each of ``layers`` decoder layers reads: ``n_text`` plus the image tokens of the schedule.

    image_tokens: an int (every layer reads that many, compression before the LLM) or a schedule
    ``((0, n0), (l1, n1), ...)`` with ascending layers starting at 0.
    """
    steps = ((0, image_tokens),) if isinstance(image_tokens, int) else tuple(image_tokens)
    starts = [layer for layer, _ in steps]
    if not steps or starts[0] != 0 or starts != sorted(set(starts)) or starts[-1] >= layers:
        raise ValueError(f"a token schedule is ((from_layer, image_tokens), ...) with ascending layers from 0 "
                         f"below {layers}, got {steps}")
    if any(n < 0 for _, n in steps) or n_text < 0:
        raise ValueError(f"token counts must be >= 0, got schedule {steps} and {n_text} text tokens")
    per_layer = []
    for (start, n), (end, _) in zip(steps, steps[1:] + ((layers, 0),)):
        per_layer += [n + n_text] * (end - start)
    return per_layer


def as_layers(n_tokens: int | Sequence[int], arch: DecoderArch) -> list[int]:
    """``n_tokens`` for every layer (an int) or per layer (a sequence of ``arch.layers`` counts)."""
    if isinstance(n_tokens, int):
        return [n_tokens] * arch.layers
    if len(n_tokens) != arch.layers:
        raise ValueError(f"give one token count per layer ({arch.layers}), got {len(n_tokens)}")
    return list(n_tokens)


def prefill_flops(n_tokens: int | Sequence[int], arch: DecoderArch = VICUNA_7B) -> float:
    """FLOPs of one prefill over ``n_tokens`` tokens, an int or one count per layer (module docstring)."""
    d, dkv, m = arch.width, arch.kv_width, arch.mlp_width
    layers = sum(4 * n * d * d + 4 * n * d * dkv + 4 * n * n * d + 6 * n * d * m for n in as_layers(n_tokens, arch))
    return float(layers + 2 * d * arch.vocab)


def kv_cache_bytes(n_tokens: int | Sequence[int], arch: DecoderArch = VICUNA_7B) -> float:
    """Bytes of the keys and values every layer keeps for its tokens."""
    return float(sum(2 * n * arch.kv_width for n in as_layers(n_tokens, arch)) * arch.bytes_per_value)


def activation_bytes(n_tokens: int | Sequence[int], arch: DecoderArch = VICUNA_7B) -> float:
    """Bytes of every intermediate tensor of one prefill forward (see the module docstring)."""
    d, dkv, m, h = arch.width, arch.kv_width, arch.mlp_width, arch.heads
    values = sum(8 * n * d + 2 * n * dkv + 2 * h * n * n + 3 * n * m for n in as_layers(n_tokens, arch))
    return float(values * arch.bytes_per_value)


def weight_bytes(arch: DecoderArch = VICUNA_7B) -> float:
    """Bytes of the decoder's weights: per layer 2 d^2 + 2 d d_kv + 3 d m + 2 d (norms); embeddings,
    LM head, final norm."""
    d = arch.width
    per_layer = 2 * d * d + 2 * d * arch.kv_width + 3 * d * arch.mlp_width + 2 * d
    params = arch.layers * per_layer + 2 * arch.vocab * d + d
    return float(params * arch.bytes_per_value)


def roofline_seconds(flops: float, bytes_moved: float, peak_flops: float, bandwidth: float) -> float:
    """The least time a device with ``peak_flops`` FLOP/s and ``bandwidth`` bytes/s needs for the work."""
    return max(flops / peak_flops, bytes_moved / bandwidth)


def cost_row(image_tokens: int | Schedule, n_text_tokens: int = LLAVA_TEXT_TOKENS,
             arch: DecoderArch = VICUNA_7B) -> dict:
    """The computed prefill cost at ``image_tokens`` visual tokens (an int or a schedule), readable units."""
    per_layer = layer_tokens(image_tokens, n_text_tokens, arch.layers)
    return {
        "image_tokens": per_layer[-1] - n_text_tokens,
        "mean_image_tokens": sum(per_layer) / len(per_layer) - n_text_tokens,
        "total_tokens": per_layer[-1],
        "TFLOPs": prefill_flops(per_layer, arch) / 1e12,
        "KV cache (MiB)": kv_cache_bytes(per_layer, arch) / 2**20,
        "activations (GiB)": activation_bytes(per_layer, arch) / 2**30,
        "weights + KV + activations (GiB)": (weight_bytes(arch) + kv_cache_bytes(per_layer, arch)
                                             + activation_bytes(per_layer, arch)) / 2**30,
    }


@torch.no_grad()
def counted_prefill_flops(arch: DecoderArch, n_tokens: int) -> float:
    """FLOPs torch's ``FlopCounterMode`` counts for one prefill of a Llama of shape ``arch`` (LM head on
    the last position), built and run on the meta device: no weights are allocated, nothing is computed."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(arch.llama_config()).eval()
        embeds = torch.empty(1, n_tokens, arch.width)
    with FlopCounterMode(display=False) as counter:
        model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)  # a cache, as generation fills it
    return float(counter.get_total_flops())


@torch.no_grad()
def measure_prefill(model, encoded, result, repeats: int = 5) -> float:
    """Median wall seconds of the LLM prefill (projector excluded) of ``model`` on the compressed input.

    model: a :class:`~rclib.models.CompressedModel`; encoded, result: its encoder output and a
    compression of it. One untimed warm-up run precedes the ``repeats`` timed ones.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    from rclib.models.compressed import timed

    embeds, mask = model.llm_inputs(encoded, result)
    language_model = model.model.model.language_model
    seconds = [timed(model.device, language_model, inputs_embeds=embeds, attention_mask=mask, use_cache=True)[1]
               for _ in range(repeats + 1)]
    return statistics.median(seconds[1:])
