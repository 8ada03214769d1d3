"""LLaVA-NeXT (LLaVA-1.6, transformers' LlavaNextForConditionalGeneration): a base view and "anyres" tiles.

The processor resizes the image to the best of the checkpoint's ``image_grid_pinpoints`` and cuts it into
gh x gw tiles of the vision tower's size, plus a base view of the whole image at that size: 1 + gh * gw
crops, each a CLIP grid of s x s patches with its own [CLS]. The LLM reads the base view's s * s tokens
first, then the tiles as one picture-shaped grid, its rows and columns of padding removed ("unpad": the
grid keeps the image's aspect ratio), row by row, a learned newline token after each row.

rclib compresses the image's tokens as one set: the base view's and the unpadded tiles' patches, N of
them (up to 5 * 576 = 2,880 at 336 px), newlines excluded (they carry no picture). Each token's [CLS]
score and keys come from its own crop, its text score from its own final token; budgets count over the
whole image; RC's adaptive filter runs once over all N scores (each crop's [CLS] attention is a
distribution over its own patches, so the crops' scores share one scale). After compression every
output token keeps its place in that order, and with ``newlines="rows"`` a newline follows each run of
output tokens from one tile row, so that with nothing pruned the LLM reads exactly what the checkpoint
feeds it; ``newlines="none"`` drops them, as the peers' released LLaVA-NeXT code does.
"""
from __future__ import annotations

import torch

from rclib.models.families.base import Family, VisualBatch
from rclib.models.families.llava import check_clip_features
from rclib.models.vision import encode_vision


def packed_order(image_size: tuple[int, int], grid_pinpoints: list, crop_side: int, side: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the LLM's image tokens come from, for one image of ``image_size`` (h, w) pixels.

    The crops' patches are numbered crop by crop in raster order (crop 0 the base view, s = ``side``
    patches a side). Returns order [N] long, the patch number of each of the N tokens the LLM reads in
    its order (newlines excluded), and rows [N] long, each token's row in the unpadded tile grid (-1:
    the base view, which has no row ends).
    """
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

    gh, gw = get_anyres_image_grid_shape(image_size, grid_pinpoints, crop_side)
    per_crop = side * side
    tiles = torch.arange(per_crop, per_crop * (1 + gh * gw)).view(gh, gw, side, side)  # [gh, gw, s, s]
    tiles = tiles.permute(0, 2, 1, 3).reshape(1, gh * side, gw * side)  # the tiles as one picture [1, gh*s, gw*s]
    tiles = unpad_image(tiles, image_size)[0]  # [h, w] the rows and columns the image covers
    rows = torch.arange(tiles.shape[0])[:, None].expand_as(tiles)
    return (torch.cat([torch.arange(per_crop), tiles.flatten()]),
            torch.cat([torch.full((per_crop,), -1), rows.flatten()]))


def crop_counts(image_sizes: torch.Tensor, grid_pinpoints: list, crop_side: int) -> list[int]:
    """The crops (base view + tiles) of each image, as the processor cut them."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    return [image_size_to_num_patches(size, grid_pinpoints, crop_side) for size in image_sizes.tolist()]


def pad_rows(rows: list[torch.Tensor], fill: float = 0) -> torch.Tensor:
    """Per-image tensors [N_b, ...] -> one [B, max N_b, ...], padded with ``fill``."""
    out = rows[0].new_full((len(rows), max(len(r) for r in rows), *rows[0].shape[1:]), fill)
    for b, row in enumerate(rows):
        out[b, :len(row)] = row
    return out


class LlavaNext(Family):
    """LLaVA-NeXT: a base view and anyres tiles, each a CLIP grid with its own [CLS]; newlines after tile rows."""

    model_type = "llava_next"
    model_class = "LlavaNextForConditionalGeneration"
    title = "LLaVA-NeXT"

    def check_config(self, config) -> None:
        check_clip_features(config)

    def visual_batch(self, model, batch: dict) -> VisualBatch:
        config = model.config
        crop_side, patch = config.vision_config.image_size, config.vision_config.patch_size
        side = crop_side // patch
        counts = crop_counts(batch["image_sizes"], config.image_grid_pinpoints, crop_side)
        pixels = batch["pixel_values"]  # [B, max crops, 3, S, S], each image's crops first
        crops = torch.cat([pixels[b, :n] for b, n in enumerate(counts)]).to(model.device, model.dtype)
        vision = encode_vision(model.model.vision_tower, crops, config.vision_feature_layer)  # [sum crops, s*s, ...]
        per_crop = {"features": vision.features, "cls_attn": vision.cls_attn, "keys": vision.keys,
                    "final_tokens": vision.last_hidden_state[:, 1:], "cls_attn_head_mean": vision.cls_attn_head_mean,
                    "keys_head_mean": vision.keys_head_mean}
        images = {name: [] for name in per_crop}
        all_rows = []
        first = 0
        for n, size in zip(counts, batch["image_sizes"].tolist(), strict=True):
            order, rows = packed_order(tuple(size), config.image_grid_pinpoints, crop_side, side)
            order = order.to(model.device)
            for name, value in per_crop.items():
                flat = value[first:first + n].flatten(0, 1)  # [n crops * s*s, ...] crop by crop, raster order
                images[name].append(flat[order])
            all_rows.append(rows)
            first += n
        rows = pad_rows(all_rows, -1)
        n_tokens = torch.tensor([len(r) for r in all_rows])
        return VisualBatch(**{name: pad_rows(values) for name, values in images.items()}, n_tokens=n_tokens,
                           rows=rows, n_llm_tokens=n_tokens + (rows.amax(1) + 1), grid=None)

    def newline(self, model) -> torch.Tensor:
        return model.model.image_newline

    def display_images(self, processor, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values[:, 0]  # the base view: the whole image at the tower's size
