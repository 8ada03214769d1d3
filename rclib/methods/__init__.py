"""Token compression methods behind one signature, and the registry that describes them.

Every method is ``fn(tokens [B, N, C], cls_attn [B, N], text_sim [B, N] | None, keys [B, N, Ck] | None,
budget: int | None, **options) -> CompressionResult``; a method that prunes inside the LLM (a
:class:`~rclib.methods.registry.PrunerSpec`) returns its pruner instead. :data:`METHODS`, here, says what each one
needs and decides (see :mod:`rclib.methods.registry`); :func:`compress` checks the inputs against it once and
dispatches by name.
"""
from __future__ import annotations

import torch

from rclib.methods.baselines import full, pool, random_tokens
from rclib.methods.cdpruner import cdpruner
from rclib.methods.checks import check_inputs, check_output_range
from rclib.methods.common import default_budget, parse_budget
from rclib.methods.dart import dart
from rclib.methods.divprune import divprune
from rclib.methods.fastervlm import fastervlm
from rclib.methods.fastv import fastv
from rclib.methods.oracle import oracle
from rclib.methods.pdrop import pdrop
from rclib.methods.prumerge import CONTROLS as PRUMERGE_CONTROLS, prumerge, prumerge_plus
from rclib.methods.rc import CONTROLS as RC_CONTROLS, RCConfig, recoverable_compression
from rclib.methods.sparsevlm import sparsevlm
from rclib.methods.tome import tome
from rclib.methods.registry import MethodSpec, PlotStyle, PrunerSpec, method_table
from rclib.methods.visionzip import visionzip
from rclib.methods.vispruner import vispruner
from rclib.result import CompressionResult

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("full", full, "every token, unchanged: the uncompressed model", "", takes_budget=False, featured=True,
               style=PlotStyle("#495057", "", "--")),
    MethodSpec("rc", recoverable_compression,
               "[CLS]-attention outliers + text-recovered tokens (original order) + KNN-merged centres + 1 extra",
               "Chen et al., Recoverable Compression, AAAI 2025 (arXiv 2409.01179)",
               needs=("cls_attn", "keys"), adaptive=True, config=RCConfig,  # text_sim unless text_stage=False
               kept_by="visual", controls=RC_CONTROLS, featured=True, style=PlotStyle("#e03131", "o", "-", width=2.0)),
    MethodSpec("prumerge", prumerge, "IQR outliers of [CLS] attention as centres, each merging its 32 nearest "
               "tokens by key, + 1 extra", "Shang et al., LLaVA-PruMerge, 2024 (arXiv 2403.15388)",
               needs=("cls_attn", "keys"), adaptive=True, scores="shared",  # its release reads RC's: the last layer
               controls=PRUMERGE_CONTROLS, featured=True, style=PlotStyle("#1971c2", "s", "-")),
    MethodSpec("prumerge+", prumerge_plus, "PruMerge with spatially uniform extra centres",
               "Shang et al., LLaVA-PruMerge, 2024 (arXiv 2403.15388)", needs=("cls_attn", "keys"), adaptive=True,
               scores="shared", controls=PRUMERGE_CONTROLS, style=PlotStyle("#4dabf7", "D", "--")),
    MethodSpec("fastervlm", fastervlm, "top-K tokens by [CLS] attention, original order, nothing merged",
               "Zhang et al., FasterVLM, 2024 (arXiv 2412.01818)", needs=("cls_attn",), scores="feature_layer",
               kept_by="visual", featured=True, style=PlotStyle("#2f9e44", "^", "-")),
    MethodSpec("visionzip", visionzip, "dominant tokens by [CLS] attention + contextual tokens merged by key "
               "similarity (54 + 10 at K = 64)", "Yang et al., VisionZip, CVPR 2025 (arXiv 2412.04467)",
               needs=("cls_attn", "keys"), scores="feature_layer", kept_by="visual", featured=True,
               style=PlotStyle("#9c36b5", "v", "--")),
    MethodSpec("divprune", divprune, "the K most mutually diverse tokens (greedy max-min cosine distance)",
               "Alvar et al., DivPrune, CVPR 2025 (arXiv 2503.02175)", kept_by="diverse", featured=True,
               style=PlotStyle("#f08c00", "P", "-.")),
    MethodSpec("random", random_tokens, "K uniformly random tokens, original order", "", kept_by="random",
               featured=True, style=PlotStyle("#868e96", "x", ":")),
    MethodSpec("pool", pool, "average pooling of the patch grid to g x g cells, g = floor(sqrt(K))", "",
               style=PlotStyle("#795548", "h", ":"), layout="grid"),
    PrunerSpec("fastv", fastv, "from LLM layer K = 2 of 32 on (the same relative depth in other LLMs), only the "
               "image tokens the last prompt token attended to most in layer K-1",
               "Chen et al., FastV, ECCV 2024 (arXiv 2403.06764)", kept_by="LLM attention",
               style=PlotStyle("#0c8599", "<", "-.")),
    MethodSpec("cdpruner", cdpruner, "the K tokens of a greedy conditional DPP: feature cosine weighted by CLIP "
               "text relevance", "Zhang et al., CDPruner, NeurIPS 2025 (arXiv 2506.10967)", needs=("text_sim",),
               kept_by="DPP", style=PlotStyle("#d6336c", ">", "--")),
    MethodSpec("tome", tome, "rounds of bipartite soft matching by key cosine until K tokens, each the mean of "
               "its sources", "Bolya et al., Token Merging, ICLR 2023 (arXiv 2210.09461)", needs=("keys",),
               scores="feature_layer",  # the keys of the layer whose output it merges, mean over heads
               kept_by="unmerged", style=PlotStyle("#5c940d", "X", "-.")),
    MethodSpec("oracle", oracle, "the asked-about objects' patches first, then top [CLS] attention: no K-token "
               "selection keeps more of the evidence (needs the ground-truth mask)", "", needs=("cls_attn", "target"),
               kept_by="target + visual", style=PlotStyle("#000000", "d", ":")),
    PrunerSpec("sparsevlm", sparsevlm, "at LLM layers 3, 7, 16 only the image tokens the question's rater tokens "
               "attended to most, the best pruned ones recycled into a few cluster means",
               "Zhang et al., SparseVLM, ICML 2025 (arXiv 2410.04417)", kept_by="LLM attention",
               style=PlotStyle("#364fc7", "8", "-.")),
    MethodSpec("vispruner", vispruner, "half the budget by [CLS] attention, the other half the most diverse of the "
               "rest (rounds dropping near-duplicates by feature cosine)", "Zhang et al., VisPruner, ICCV 2025",
               needs=("cls_attn",), scores="feature_layer", kept_by="visual + diverse",
               style=PlotStyle("#845ef7", "p", "-")),
    PrunerSpec("dart", dart, "from LLM layer K = 2 of 32 on, 4 image + 4 text pivots (largest key norm) and the "
               "image tokens least duplicated with them (no attention weights read)",
               "Wen et al., DART, EMNLP 2025 (arXiv 2502.11494)", kept_by="least duplicated",
               style=PlotStyle("#e8590c", "H", "--")),
    PrunerSpec("pdrop", pdrop, "at LLM layers 8, 16, 24 of 32, a share lambda of the image tokens the last "
               "instruction token attends to most; a budget sets the mean image tokens over the layers",
               "Xing et al., PyramidDrop, CVPR 2025 (arXiv 2410.17247)", kept_by="LLM attention",
               style=PlotStyle("#099268", "p", ":")),
)}


def compress(tokens: torch.Tensor, cls_attn: torch.Tensor | None = None, text_sim: torch.Tensor | None = None,
             keys: torch.Tensor | None = None, method: str = "rc", budget: int | None = None,
             check_values: bool = True, **options) -> CompressionResult:
    """Compress a batch of visual tokens with ``method``; see the module docstring for shapes.

    budget: None lets adaptive methods (rc, prumerge, prumerge+) choose K per sample; the other methods
    then keep :func:`~rclib.methods.common.default_budget` of N. An int fixes K (an upper bound for rc and
    the merging peers). check_values: False skips the scan for NaN / inf, the one host sync of the checks,
    for a trusted hot path (inputs straight from the encoders). float16 tokens are also scanned on the way out
    (a second sync): a merge sums tokens, and sums of finite float16 features near its limit (65504) overflow.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    spec = METHODS[method]
    if spec.placement == "inside_llm":
        raise ValueError(f"method {method!r} prunes inside the LLM, from its attention: run it through "
                         f"CompressedModel.answer / run (method={method!r}); compress covers the methods before the LLM")
    budget = check_inputs(spec, tokens, cls_attn, text_sim, keys, budget, options, check_values)
    result = spec.fn(tokens, cls_attn, text_sim, keys, budget, **options)
    if check_values:
        check_output_range(method, tokens, result.tokens)
    return result


__all__ = ["METHODS", "MethodSpec", "PrunerSpec", "compress", "default_budget", "method_table", "parse_budget", "RCConfig"]
