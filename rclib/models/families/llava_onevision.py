"""LLaVA-OneVision (transformers' LlavaOnevisionForConditionalGeneration): SigLIP tiles, no [CLS], a Qwen2 LLM.

The image is cut as LLaVA-NeXT's ("anyres": a base view and tiles, unpadded, a newline after each tile
row), with two differences this family declares:
- SigLIP has no [CLS] token: each patch's importance is the attention it receives in the last vision
  layer, averaged over every query (and over the heads for the peers' feature-layer score), the
  substitute VisPruner and LightCompress use for towers without a [CLS]; every token is a patch (the
  "full" feature selection);
- "anyres_max_N": when the unpadded tiles hold more than N crops' worth of patches, the checkpoint shrinks
  their picture by bilinear interpolation AFTER its projector, before the LLM reads it; rclib shrinks every
  per-patch quantity (tokens, scores, keys) the same way, so each token's scores are those of the token the
  LLM reads. As the projector (an MLP) does not commute with that interpolation, this family's tokens are the
  projected ones: methods select and merge in the LLM's input space, where LLaVA-1.5's merge before the
  projector; with nothing pruned, the LLM reads exactly the checkpoint's own input.
The text score reads the paired SigLIP's text tower (:class:`rclib.models.text.SiglipTextTower`).
"""
from __future__ import annotations

from rclib.models.families.llava import check_features
from rclib.models.families.llava_next import LlavaNext


class LlavaOnevision(LlavaNext):
    """LLaVA-OneVision: LLaVA-NeXT's tiles on a SigLIP tower (importance from received attention), anyres_max."""

    model_type = "llava_onevision"
    model_class = "LlavaOnevisionForConditionalGeneration"
    title = "LLaVA-OneVision"
    importance = "received attention (mean over queries), last SigLIP layer"
    has_cls = False
    project_first = True
    text_tower_kind = "siglip"

    def check_config(self, config) -> None:
        check_features(config, "siglip_vision_model", "full", self.title)
        self.max_tiles_of(config)

    def max_tiles_of(self, config) -> int:
        ratio = config.vision_aspect_ratio
        if not ratio.startswith("anyres_max_") or not ratio.removeprefix("anyres_max_").isdigit():
            raise ValueError(f"rclib reads LLaVA-OneVision's 'anyres_max_N' vision_aspect_ratio, got {ratio!r}")
        return int(ratio.removeprefix("anyres_max_"))
