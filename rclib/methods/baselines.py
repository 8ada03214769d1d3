"""Simple reference points: all tokens, random tokens, and spatial average pooling."""
from __future__ import annotations

import math

import torch

from rclib.filters import topk_mask
from rclib.methods.common import Entries, assemble, budget_int, keep_and_drop, token_columns
from rclib.result import CompressionResult, Fate, Slot


def full(tokens: torch.Tensor, cls_attn=None, text_sim=None, keys=None, budget=None) -> CompressionResult:
    """Every token, unchanged: the uncompressed model."""
    keep = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return keep_and_drop(tokens, keep, "full", {}, K=tokens.shape[1])


def random_tokens(tokens: torch.Tensor, cls_attn=None, text_sim=None, keys=None, budget=None, *,
                  seed: int = 0) -> CompressionResult:
    """K uniformly random tokens, in original order; the draw depends on ``seed`` only (same for
    every sample, so a batch equals its samples run alone)."""
    B, N, _ = tokens.shape
    k = min(budget_int(budget, N), N)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    scores = torch.rand(N, generator=generator).to(tokens.device).expand(B, N)
    return keep_and_drop(tokens, topk_mask(scores, k), "random", {}, K=k)


def pool(tokens: torch.Tensor, cls_attn=None, text_sim=None, keys=None, budget=None) -> CompressionResult:
    """Average pooling of the square patch grid to g x g cells, g = floor(sqrt(budget)) (K = g^2)."""
    B, N, _ = tokens.shape
    side = math.isqrt(N)
    if side * side != N:
        raise ValueError(f"pool needs a square patch grid, got N = {N} tokens; use another method")
    g = min(side, max(1, math.isqrt(budget_int(budget, N))))
    rows = torch.arange(N, device=tokens.device) // side
    cols = torch.arange(N, device=tokens.device) % side
    cell = (rows * g // side) * g + cols * g // side  # [N] the pooling cell of each patch
    cell_size = torch.bincount(cell, minlength=g * g).float()
    entries = Entries(cell.expand(B, N), token_columns(cell.expand(B, N)), (1.0 / cell_size[cell]).expand(B, N))
    slot_rows = torch.arange(g * g, device=tokens.device).expand(B, g * g)
    fate = torch.full((B, N), int(Fate.MERGED), dtype=torch.long, device=tokens.device)
    return assemble(tokens, entries, slot_rows, torch.full_like(slot_rows, int(Slot.POOLED)), None, fate, "pool", {},
                    K=g * g)
