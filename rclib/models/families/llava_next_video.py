"""LLaVA-NeXT-Video (transformers' LlavaNextVideoForConditionalGeneration) on still images.

Its image path is LLaVA-NeXT's (a base view and anyres tiles, a newline after each tile row), so the family is
LLaVA-NeXT's under another checkpoint type: the smallest example of adding a model family to rclib.
"""
from __future__ import annotations

from rclib.models.families.llava_next import LlavaNext


class LlavaNextVideo(LlavaNext):
    """LLaVA-NeXT-Video's images: LLaVA-NeXT's base view and tiles."""

    model_type = "llava_next_video"
    model_class = "LlavaNextVideoForConditionalGeneration"
    title = "LLaVA-NeXT-Video"
