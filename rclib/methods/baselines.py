"""Simple reference points: all tokens, random tokens, and spatial average pooling."""
from __future__ import annotations

import math

import torch

from rclib.filters import topk_mask
from rclib.methods.common import Entries, assemble, budget_tensor, default_budget, keep_and_drop
from rclib.result import CompressionResult, Fate, Slot


def full(tokens: torch.Tensor, cls_attn=None, text_sim=None, keys=None, budget=None) -> CompressionResult:
    """Every token, unchanged: the uncompressed model."""
    keep = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return keep_and_drop(tokens, keep, "full", {})


def random_tokens(tokens: torch.Tensor, cls_attn=None, text_sim=None, keys=None, budget=None, *,
                  seed: int = 0) -> CompressionResult:
    """K uniformly random tokens, in original order; the draw depends on ``seed`` only (same for
    every sample, so a batch equals its samples run alone)."""
    B, N, _ = tokens.shape
    generator = torch.Generator(device="cpu").manual_seed(seed)
    scores = torch.rand(N, generator=generator).to(tokens.device).expand(B, N)
    keep = topk_mask(scores, budget_tensor(budget or default_budget(N), B, tokens.device))
    return keep_and_drop(tokens, keep, "random", {})


def pool(tokens: torch.Tensor, cls_attn=None, text_sim=None, keys=None, budget=None) -> CompressionResult:
    """Average pooling of the square patch grid to g x g cells, g = floor(sqrt(budget)) (K = g^2)."""
    B, N, _ = tokens.shape
    side = math.isqrt(N)
    if side * side != N:
        raise ValueError(f"pool needs a square patch grid, got N = {N} tokens; use another method")
    g = min(side, max(1, math.isqrt(int(budget or default_budget(N)))))
    rows = torch.arange(N, device=tokens.device) // side
    cols = torch.arange(N, device=tokens.device) % side
    cell = (rows * g // side) * g + cols * g // side  # [N] the pooling cell of each patch
    cell_size = torch.bincount(cell, minlength=g * g).float()
    entries = Entries(cell.expand(B, N), torch.arange(N, device=tokens.device).expand(B, N),
                      (1.0 / cell_size[cell]).expand(B, N))
    slot_rows = torch.arange(g * g, device=tokens.device).expand(B, g * g)
    fate = torch.full((B, N), int(Fate.MERGED), dtype=torch.long, device=tokens.device)
    n_slots = torch.full((B,), g * g, dtype=torch.long, device=tokens.device)
    return assemble(tokens, entries, slot_rows, torch.full_like(slot_rows, int(Slot.POOLED)), n_slots, fate,
                    "pool", {})
