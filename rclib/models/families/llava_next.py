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

import math
from functools import partial

import torch

from rclib.models.families.base import Family, VisualBatch, grid_places, pad_rows
from rclib.models.families.llava import check_features
from rclib.models.vision import encode_vision


def pack_tiles(per_crop: torch.Tensor, image_size: tuple[int, int], grid_pinpoints: list, crop_side: int,
               max_tiles: int | None = None) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """One image's crops as its LLM reads them, for any per-patch quantity (features, scores, keys).

    per_crop [P, s * s, ...] (crop 0 the base view, then the tiles in raster order, each s x s patches in
    raster order) -> tokens [N, ...]: the base view's patches, then the tiles' as one picture with its
    padding rows and columns removed (``unpad``), shrunk by bilinear interpolation when it holds more than
    ``max_tiles`` crops' worth (LLaVA-OneVision's "anyres_max"), row by row; places [N, 3] long, each token's
    (view, row, column): view 0 the base view's s x s grid, view 1 the tiles' h x w picture; and (h, w).
    """
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

    side = math.isqrt(per_crop.shape[1])
    gh, gw = get_anyres_image_grid_shape(image_size, grid_pinpoints, crop_side)
    extra = per_crop.shape[2:]
    tiles = per_crop[1:].reshape(gh, gw, side, side, -1)  # [gh, gw, s, s, D]
    tiles = tiles.permute(4, 0, 2, 1, 3).reshape(-1, gh * side, gw * side)  # one picture [D, gh*s, gw*s]
    tiles = unpad_image(tiles, image_size)  # [D, h, w] the rows and columns the image covers
    if max_tiles is not None:
        ratio = math.sqrt(tiles.shape[1] * tiles.shape[2] / (max_tiles * side**2))
        if ratio > 1.1:
            size = [int(tiles.shape[1] // ratio), int(tiles.shape[2] // ratio)]
            tiles = torch.nn.functional.interpolate(tiles[None], size, mode="bilinear")[0]
    h, w = tiles.shape[1:]
    tokens = tiles.flatten(1).transpose(0, 1).reshape(h * w, *extra)  # [D, h, w] -> [h*w, ...] row by row
    return torch.cat([per_crop[0], tokens]), torch.cat([grid_places(0, side, side), grid_places(1, h, w)]), (h, w)


def token_crops(pack, n_crops: int, side: int) -> torch.Tensor:
    """[N] long: the crop each packed token comes from (0: the base view), -1 for a token the shrinking mixed from
    several crops. pack: :func:`pack_tiles` for one image; it packs the crop numbers and their squares, whose
    difference from the packed numbers' square (a variance) is 0 exactly where one crop contributes."""
    numbers = torch.arange(n_crops, dtype=torch.float64)[:, None].expand(-1, side * side)  # [P, s*s]
    crop, squared = pack(numbers)[0], pack(numbers**2)[0]
    return torch.where((squared - crop**2).abs() < 1e-6, crop.round(), -1).long()


def crop_counts(image_sizes: torch.Tensor, grid_pinpoints: list, crop_side: int) -> list[int]:
    """The crops (base view + tiles) of each image, as the processor cut them."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    return [image_size_to_num_patches(size, grid_pinpoints, crop_side) for size in image_sizes.tolist()]


class LlavaNext(Family):
    """LLaVA-NeXT: a base view and anyres tiles, each a CLIP grid with its own [CLS]; newlines after tile rows."""

    model_type = "llava_next"
    model_class = "LlavaNextForConditionalGeneration"
    title = "LLaVA-NeXT"

    def check_config(self, config) -> None:
        check_features(config, "clip_vision_model", "default", self.title)

    has_cls = True  # each crop's importance: its [CLS] attention (else the attention each patch receives)
    max_tiles: int | None = None  # the tiles' picture is shrunk to this many crops' worth of tokens (None: never)
    project_first = False  # True: the tokens are projected into the LLM's space before packing (and merging)

    def project(self, model, tokens):
        return tokens if self.project_first else super().project(model, tokens)

    def max_tiles_of(self, config) -> int | None:
        """The ``max_tiles`` of a checkpoint (LLaVA-OneVision reads it from its config)."""
        return self.max_tiles

    def visual_batch(self, model, batch: dict) -> VisualBatch:
        config = model.config
        crop_side = config.vision_config.image_size
        counts = crop_counts(batch["image_sizes"], config.image_grid_pinpoints, crop_side)
        pixels = batch["pixel_values"]  # [B, max crops, 3, S, S], each image's crops first
        crops = torch.cat([pixels[b, :n] for b, n in enumerate(counts)]).to(model.device, model.dtype)
        side = crop_side // config.vision_config.patch_size
        vision = encode_vision(model.model.vision_tower, crops, config.vision_feature_layer, self.has_cls)
        first_patch = 1 if self.has_cls else 0
        features = model.model.multi_modal_projector(vision.features) if self.project_first else vision.features
        per_crop = {"features": features, "cls_attn": vision.cls_attn, "keys": vision.keys,
                    "final_tokens": vision.last_hidden_state[:, first_patch:],
                    "cls_attn_head_mean": vision.cls_attn_head_mean, "keys_head_mean": vision.keys_head_mean}
        images = {name: [] for name in per_crop}
        places, views, crop_of = [], [], []
        first = 0
        for n, size in zip(counts, batch["image_sizes"].tolist(), strict=True):
            pack = partial(pack_tiles, image_size=tuple(size), grid_pinpoints=config.image_grid_pinpoints,
                           crop_side=crop_side, max_tiles=self.max_tiles_of(config))
            for name, value in per_crop.items():
                tokens, image_places, tiles = pack(value[first:first + n])
                images[name].append(tokens)
            places.append(image_places)
            views.append([(side, side), tiles])
            crop_of.append(token_crops(pack, n, side))
            first += n
        places = pad_rows(places, -1)
        n_tokens = torch.tensor([len(tokens) for tokens in images["features"]])
        row_ends = torch.tensor([h for _, (h, _) in views])  # one per row of the tiles' picture
        return VisualBatch(**{name: pad_rows(values) for name, values in images.items()}, n_tokens=n_tokens,
                           places=places, views=views, crops=pad_rows(crop_of, -1), n_llm_tokens=n_tokens + row_ends,
                           grid=None)

    def most_image_tokens(self, config, image_processor) -> int:
        """The base view, the largest tile layout's patches and a row end per row of it (before any shrinking)."""
        side = config.vision_config.image_size // config.vision_config.patch_size
        crop = config.vision_config.image_size
        return side * side + max((h // crop) * (w // crop) * side * side + (h // crop) * side
                                 for h, w in config.image_grid_pinpoints)

    def newline(self, model) -> torch.Tensor:
        return model.model.image_newline

    def display_images(self, processor, pixel_values: torch.Tensor, views) -> torch.Tensor:
        return pixel_values[:, 0]  # the base view: the whole image at the tower's size
