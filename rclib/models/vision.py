"""One forward of a transformers vision tower (CLIP, SigLIP) gives everything the compression methods read.

A tower with a [CLS] token (CLIP) scores each patch by the attention [CLS] pays it; a tower without one
(SigLIP) by the attention it receives, averaged over the queries (every token), the substitute VisPruner
and LightCompress use for such towers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class VisionOutput:
    """What one vision forward yields, for a batch of B images with N = h * w patches."""

    features: torch.Tensor  # [B, N, C] patch tokens of the feature layer (LLaVA: hidden_states[-2]), CLS dropped
    cls_attn: torch.Tensor  # [B, N] float32, last layer's [CLS] -> patch attention, all heads as one (no CLS:
    # the attention each patch receives, mean over queries)
    keys: torch.Tensor  # [B, N, C] last layer's k_proj outputs for the patches, not normalised
    last_hidden_state: torch.Tensor  # [B, (1 +) N, C] final layer output (CLS first if any), before post_layernorm
    grid: tuple[int, int]  # (h, w) patch grid, raster order of the N tokens
    cls_attn_head_mean: torch.Tensor  # [B, N] float32, the feature layer's [CLS] -> patch attention, mean of the heads
    keys_head_mean: torch.Tensor  # [B, N, C / heads] the feature layer's k_proj outputs, mean of the heads


def cls_attention(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """[CLS] attention over the patches, heads merged into ONE head of width C.

    queries, keys [B, 1 + N, C] (CLS first) -> [B, N] float32: softmax over all 1 + N keys of
    q_cls . k_j / sqrt(C), CLS column dropped (the rows do not sum to 1).
    """
    q_cls = queries[:, 0].float()  # [B, C]
    logits = torch.einsum("bc,bjc->bj", q_cls, keys.float()) / math.sqrt(queries.shape[-1])  # [B, 1 + N]
    return logits.softmax(dim=-1)[:, 1:]


def cls_attention_per_head(queries: torch.Tensor, keys: torch.Tensor, heads: int) -> torch.Tensor:
    """[CLS] attention over the patches as the layer computes it, head by head, then the mean of the heads.

    queries, keys [B, 1 + N, C] (CLS first) -> [B, N] float32: per head, softmax over all 1 + N keys of
    q_cls . k_j / sqrt(C / heads), CLS column dropped. FasterVLM reads this mean; VisionZip the sum (the
    same order).
    """
    B, L, C = keys.shape
    q_cls = queries[:, 0].float().view(B, heads, C // heads)  # [B, C] -> [B, h, d]
    k = keys.float().view(B, L, heads, C // heads)  # [B, 1 + N, C] -> [B, 1 + N, h, d]
    logits = torch.einsum("bhd,bjhd->bhj", q_cls, k) / math.sqrt(C // heads)  # [B, h, 1 + N]
    return logits.softmax(dim=-1)[:, :, 1:].mean(1)


def received_attention(queries: torch.Tensor, keys: torch.Tensor, heads: int) -> torch.Tensor:
    """The attention each token receives, for towers without a [CLS]: per head, softmax over the N keys of
    q_i . k_j / sqrt(C / heads), averaged over the N queries i, then over the heads.

    queries, keys [B, N, C] -> [B, N] float32 (each row sums to 1). One head at a time: [B, N, N] at most.
    """
    B, N, C = keys.shape
    q = queries.float().view(B, N, heads, C // heads)  # [B, N, C] -> [B, N, h, d]
    k = keys.float().view(B, N, heads, C // heads)
    received = torch.zeros(B, N, device=keys.device)
    for h in range(heads):
        logits = torch.einsum("bid,bjd->bij", q[:, :, h], k[:, :, h]) / math.sqrt(C // heads)  # [B, N, N]
        received += logits.softmax(dim=-1).mean(1)
    return received / heads


@torch.no_grad()
def encode_vision(tower, pixel_values: torch.Tensor, feature_layer: int = -2, has_cls: bool = True) -> VisionOutput:
    """Run a transformers ``CLIPVisionModel`` once on pixel_values [B, 3, H, W].

    The q_proj / k_proj outputs of the last encoder layer (RC's scores) and of the feature layer (the
    peers' own: FasterVLM, VisionZip) are caught with forward hooks; the feature layer indexes
    ``hidden_states`` as LLaVA does (-2: the penultimate layer's output, made by ``layers[-2]``). has_cls: False
    for a tower without a [CLS] (SigLIP): every token is a patch, scored by :func:`received_attention`.
    """
    layers = tower.encoder.layers
    feature_attention = layers[feature_layer % (len(layers) + 1) - 1].self_attn  # hidden_states[i] is layer i-1's output
    caught: dict[str, torch.Tensor] = {}
    hooks = [layers[-1].self_attn.q_proj.register_forward_hook(lambda module, args, out: caught.__setitem__("q", out)),
             layers[-1].self_attn.k_proj.register_forward_hook(lambda module, args, out: caught.__setitem__("k", out)),
             feature_attention.q_proj.register_forward_hook(lambda module, args, out: caught.__setitem__("fq", out)),
             feature_attention.k_proj.register_forward_hook(lambda module, args, out: caught.__setitem__("fk", out))]
    try:
        out = tower(pixel_values, output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    patch = tower.config.patch_size
    grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
    first = 1 if has_cls else 0  # the first patch token
    features = out.hidden_states[feature_layer][:, first:]  # [B, (1 +) N, C] -> [B, N, C]
    assert features.shape[1] == grid[0] * grid[1], \
        f"{features.shape[1]} patch tokens do not fill the {grid} grid of {tuple(pixel_values.shape)} images"
    heads = tower.config.num_attention_heads
    B, L, C = caught["fk"].shape
    if has_cls:
        importance = cls_attention(caught["q"], caught["k"])
        importance_head_mean = cls_attention_per_head(caught["fq"], caught["fk"], heads)
    else:
        importance = received_attention(caught["q"], caught["k"], 1)
        importance_head_mean = received_attention(caught["fq"], caught["fk"], heads)
    return VisionOutput(features=features, cls_attn=importance, keys=caught["k"][:, first:],
                        last_hidden_state=out.hidden_states[-1], grid=grid, cls_attn_head_mean=importance_head_mean,
                        keys_head_mean=caught["fk"].view(B, L, heads, C // heads).mean(2)[:, first:])  # [B, N, C / heads]
