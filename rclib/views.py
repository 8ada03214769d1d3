"""An image's views as the figures draw them: one patch grid (LLaVA-1.5, Qwen2.5-VL), or a base view and the tiles'
picture (LLaVA-NeXT, LLaVA-OneVision).

A family with tiles (LLaVA-NeXT, LLaVA-OneVision) reads an image twice: its base view, the whole image squashed
to the vision tower's square, as an s x s grid; then gh x gw tiles of that size, stitched into one picture whose
padding rows and columns are removed, as an h x w grid (shrunk when the checkpoint caps its tokens). Each token
knows its (view, row, column) (``Encoded.token_places``); here each view becomes a :class:`View`: a grid of cells,
each holding the index of its token or -1, and the picture the grid covers, so that per-token values (scores,
fates) land where the user sees the patch. Nothing here draws (:mod:`rclib.viz` does).

The tiles' picture is cut from the tiles' own pixels, as the tokens were: the crops stitched gh x gw and the
padding around the image removed. The encoded batch does not keep the image's size, so the tile grid (gh, gw) is
the one of the crops the processor made whose unpadded picture is the tiles view's grid (:func:`tile_grid`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rclib.models.prompts import display_pixels


@dataclass(frozen=True)
class View:
    """One view of an image: the picture a figure draws and, over it, a grid of cells holding the image's tokens."""

    image: np.ndarray  # uint8 [H, W, 3]: exactly what the grid covers
    cells: np.ndarray  # [h, w] long: the token (0..N-1) at each cell, -1 where none
    title: str = ""  # what the view is, above its column where a figure shows several
    lines: tuple = ()  # segments ((x0, y0), (x1, y1)) between its tiles, in cell units


def as_cells(grid) -> np.ndarray:
    """[h, w] long cells of a grid: ``grid`` itself (a view's cells) or, for an (h, w) patch grid, its tokens in
    raster order."""
    if isinstance(grid, np.ndarray):
        return grid
    h, w = grid
    return np.arange(h * w).reshape(h, w)


def as_views(image, grid) -> list[View]:
    """The views a figure draws: ``image`` itself when it is a list of views (grid None), else one: the image over
    its patch grid (h, w) or cells."""
    return list(image) if grid is None else [View(image, as_cells(grid))]


def view_cells(places, views: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per view, [h, w] long: the token at each cell, -1 where none.

    places: [N, 3] long, each token's (view, row, column), -1 for padding; views: each view's (h, w).
    """
    places = np.asarray(places)
    out = []
    for v, shape in enumerate(views):
        cells = np.full(shape, -1)
        tokens = np.flatnonzero(places[:, 0] == v)
        cells[places[tokens, 1], places[tokens, 2]] = tokens
        out.append(cells)
    return out


def on_cells(values, cells: np.ndarray) -> np.ndarray:
    """Per-token values [N, ...] on a view's cells [h, w]: float [h, w, ...], NaN where no token is."""
    values = np.asarray(values, dtype=float)
    out = np.full((*cells.shape, *values.shape[1:]), np.nan)
    out[cells >= 0] = values[cells[cells >= 0]]
    return out


def view_maps(values, places, views: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per-token values [N, ...] as one array [h, w, ...] per view (places, views: see :func:`view_cells`), NaN
    where no token is."""
    return [on_cells(values, cells) for cells in view_cells(places, views)]


def token_count(views: list[View]) -> int:
    """The tokens the views hold: the image's real ones, 0..n-1 (a batch pads the rest)."""
    return 1 + max(int(view.cells.max()) for view in views)


def tile_grid(n_tiles: int, side: int, tiles: tuple[int, int]) -> tuple[int, int]:
    """(gh, gw) of ``n_tiles`` tiles of side x side patches whose unpadded picture is the h x w grid ``tiles``:
    the one layout that holds it, full along one side (unpadding cuts one side only); for a shrunk picture
    (LLaVA-OneVision's anyres_max), the layout of the closest aspect."""
    h, w = tiles
    layouts = [(gh, n_tiles // gh) for gh in range(1, n_tiles + 1) if n_tiles % gh == 0]
    held = [(gh, gw) for gh, gw in layouts
            if (h == gh * side and w <= gw * side) or (w == gw * side and h <= gh * side)]
    return held[0] if held else min(layouts, key=lambda layout: abs(math.log(layout[0] * w / (layout[1] * h))))


def tiles_window(layout: tuple[int, int], side: int, tiles: tuple[int, int]) -> tuple[float, float, float]:
    """Where the tiles view lies on the stitched tiles, in patches: (top, left) of its first cell and the patches
    per cell (1 unless the picture was shrunk), its padding split evenly on both ends as unpadding cuts it."""
    (gh, gw), (h, w) = layout, tiles
    scale = min(gh * side / h, gw * side / w)
    return (gh * side - h * scale) / 2, (gw * side - w * scale) / 2, scale


def tiles_picture(crops: np.ndarray, layout: tuple[int, int], side: int, tiles: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3]: the tile crops [gh * gw, S, S, 3] (raster order) stitched gh x gw, cut to what the tiles
    view's h x w cells cover."""
    (gh, gw), size = layout, crops.shape[1]
    stitched = crops.reshape(gh, gw, size, size, 3).transpose(0, 2, 1, 3, 4).reshape(gh * size, gw * size, 3)
    top, left, scale = tiles_window(layout, side, tiles)
    pixels = size / side  # per patch
    (h, w) = tiles
    return stitched[round(top * pixels):round((top + h * scale) * pixels),
                    round(left * pixels):round((left + w * scale) * pixels)]


def tile_lines(layout: tuple[int, int], side: int, tiles: tuple[int, int]) -> tuple:
    """The borders between tiles inside the tiles view, as segments ((x0, y0), (x1, y1)) in cell units."""
    top, left, scale = tiles_window(layout, side, tiles)
    (gh, gw), (h, w) = layout, tiles
    rows = [(k * side - top) / scale for k in range(1, gh)]
    columns = [(k * side - left) / scale for k in range(1, gw)]
    return (tuple(((0, y), (w, y)) for y in rows if 0 < y < h)
            + tuple(((x, 0), (x, h)) for x in columns if 0 < x < w))


def image_views(model, encoded, b: int = 0) -> list[View]:
    """Sample ``b``'s views. One patch grid (LLaVA-1.5, Qwen2.5-VL): the image it covers (``display_images``, cut to
    this image where a batch of several sizes padded it). A tiled family: the base view (crop 0) and the tiles'
    picture (the crops after it, stitched and unpadded as the tokens are) with its tile borders.
    model: the :class:`~rclib.models.CompressedModel` that encoded it."""
    shapes = encoded.views[b]
    cells = view_cells(encoded.token_places[b].cpu(), shapes)
    if len(shapes) == 1:
        shown = model.display_images(encoded)  # [B, H, W, 3]: each image from the top left, the largest fills it
        per_cell = shown.shape[1] / max(views[0][0] for views in encoded.views)  # pixels
        (h, w), = shapes
        return [View(shown[b, :round(h * per_cell), :round(w * per_cell)], cells[0])]
    pixels = encoded.pixel_values[b]  # [crops, 3, S, S], a batch's extra crops all zero
    n_crops = int((pixels.flatten(1) != 0).any(1).sum())
    crops = display_pixels(model.processor.image_processor, pixels[:n_crops])  # [crops, S, S, 3]
    (side, _), tiles = shapes
    layout = tile_grid(n_crops - 1, side, tiles)
    return [View(crops[0], cells[0], f"base view\n{side} x {side} tokens"),
            View(tiles_picture(crops[1:], layout, side, tiles), cells[1],
                 f"tiles: {layout[0]} x {layout[1]} crops\n{tiles[0]} x {tiles[1]} tokens",
                 tile_lines(layout, side, tiles))]
