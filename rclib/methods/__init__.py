"""Token compression methods behind one signature.

Every method is ``fn(tokens [B, N, C], cls_attn [B, N], text_sim [B, N] | None, keys [B, N, Ck] | None,
budget: int | None, **options) -> CompressionResult``. :func:`compress` checks the inputs once and
dispatches by name.
"""
from __future__ import annotations

import torch

from rclib.methods.baselines import full, pool, random_tokens
from rclib.methods.checks import check_inputs
from rclib.methods.divprune import divprune
from rclib.methods.fastervlm import fastervlm
from rclib.methods.prumerge import prumerge, prumerge_plus
from rclib.methods.rc import RCConfig, recoverable_compression
from rclib.methods.visionzip import visionzip
from rclib.result import CompressionResult

METHODS = {
    "full": full,
    "rc": recoverable_compression,
    "prumerge": prumerge,
    "prumerge+": prumerge_plus,
    "fastervlm": fastervlm,
    "visionzip": visionzip,
    "divprune": divprune,
    "random": random_tokens,
    "pool": pool,
}


def compress(tokens: torch.Tensor, cls_attn: torch.Tensor | None = None, text_sim: torch.Tensor | None = None,
             keys: torch.Tensor | None = None, method: str = "rc", budget: int | None = None,
             **options) -> CompressionResult:
    """Compress a batch of visual tokens with ``method``; see the module docstring for shapes.

    budget: None lets adaptive methods (rc, prumerge, prumerge+) choose K per sample; fixed-budget
    peers then use 64/576 of N. An int fixes K (an upper bound for rc and the merging peers).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    budget = check_inputs(method, METHODS[method], tokens, cls_attn, text_sim, keys, budget, options)
    return METHODS[method](tokens, cls_attn, text_sim, keys, budget, **options)


__all__ = ["METHODS", "compress", "RCConfig"]
