"""LLaVA-1.5 (transformers' LlavaForConditionalGeneration) and rclib's embedded ShapesWorld model.

A CLIP vision tower sees the whole image at one resolution: one square grid of h x w patches, the [CLS]
dropped ("default" feature selection), the feature layer's tokens projected into one contiguous run of
image placeholders in the prompt. No row ends.
"""
from __future__ import annotations

import torch

from rclib.models.families.base import Family, VisualBatch, grid_places, left_pad, placeholder_span
from rclib.models.vision import encode_vision


def check_features(config, tower: str, strategy: str, family: str) -> None:
    """Raise unless the vision tower is a ``tower`` (config's model_type) read at one feature layer with the feature
    selection ``strategy`` ("default": [CLS] dropped; "full": every token), as ``family`` reads it."""
    if config.vision_config.model_type != tower:
        raise ValueError(f"rclib reads {family} with its {tower!r} vision tower; this checkpoint's is "
                         f"{config.vision_config.model_type!r}")
    if config.vision_feature_select_strategy != strategy or not isinstance(config.vision_feature_layer, int):
        raise ValueError(f"rclib expects {family}'s feature selection: one vision_feature_layer, {strategy!r}; got "
                         f"layer {config.vision_feature_layer} and {config.vision_feature_select_strategy!r}")


def splice_image_tokens(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_tokens: torch.Tensor,
                        n_output: torch.Tensor, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The LLM's input: each prompt with its projected visual tokens in place of its image placeholders.

    model: a LlavaForConditionalGeneration. input_ids [B, L] and attention_mask [B, L] (any padding side),
    each row holding one run of ``n_tokens`` image placeholders; image_tokens [B, K, C] vision-side tokens
    (before the projector), of which row b uses the first n_output[b]. Differentiable (training calls it
    with gradients). Returns inputs_embeds [B, L', H] and attention_mask [B, L'], left-padded.
    """
    image_embeds = model.model.multi_modal_projector(image_tokens)  # [B, K, H]
    embed = model.get_input_embeddings()
    rows = []
    for b in range(len(input_ids)):
        ids = input_ids[b][attention_mask[b].bool()]  # this prompt, unpadded
        start, end = placeholder_span(ids, model.config.image_token_id, n_tokens)
        rows.append(torch.cat([embed(ids[:start]), image_embeds[b, :int(n_output[b])], embed(ids[end:])]))
    return left_pad(rows)


class Llava(Family):
    """LLaVA-1.5: one CLIP grid per image, [CLS] attention from the tower's own [CLS]."""

    model_type = "llava"
    model_class = "LlavaForConditionalGeneration"
    title = "LLaVA"

    def check_config(self, config) -> None:
        check_features(config, "clip_vision_model", "default", self.title)

    def visual_batch(self, model, batch: dict) -> VisualBatch:
        pixel_values = batch["pixel_values"].to(model.device, model.dtype)  # [B, 3, H, W]
        vision = encode_vision(model.model.vision_tower, pixel_values, model.config.vision_feature_layer)
        B, N, _ = vision.features.shape
        return VisualBatch(features=vision.features, cls_attn=vision.cls_attn, keys=vision.keys,
                           final_tokens=vision.last_hidden_state[:, 1:], cls_attn_head_mean=vision.cls_attn_head_mean,
                           keys_head_mean=vision.keys_head_mean, n_tokens=torch.full((B,), N, dtype=torch.long),
                           places=grid_places(0, *vision.grid).expand(B, N, 3), views=[[vision.grid]] * B,
                           crops=torch.zeros(B, N, dtype=torch.long),
                           n_llm_tokens=torch.full((B,), N), grid=vision.grid)

    def most_image_tokens(self, config, image_processor) -> int:
        return (config.vision_config.image_size // config.vision_config.patch_size) ** 2  # patches, [CLS] dropped

    def display_images(self, processor, pixel_values: torch.Tensor, views) -> torch.Tensor:
        return pixel_values
