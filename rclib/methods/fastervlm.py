"""FasterVLM (Zhang et al., 2024): keep the top-K tokens by [CLS] attention, in original order; drop the rest.

FasterVLM reads the [CLS] attention of the penultimate layer; rclib passes the same ``cls_attn`` all
methods get (last layer, as RC defines it).
"""
from __future__ import annotations

import torch

from rclib.filters import topk_mask
from rclib.methods.common import budget_int, keep_and_drop
from rclib.result import CompressionResult


def fastervlm(tokens: torch.Tensor, cls_attn: torch.Tensor, text_sim=None, keys=None, budget=None) -> CompressionResult:
    """tokens [B, N, C], cls_attn [B, N] -> the K = budget (default 64/576 of N) best tokens."""
    k = min(budget_int(budget, tokens.shape[1]), tokens.shape[1])
    return keep_and_drop(tokens, topk_mask(cls_attn, k), "fastervlm", {"visual": cls_attn}, K=k)
