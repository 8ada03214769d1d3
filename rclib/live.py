"""The explorer's figure, kept live: the :data:`rclib.viz.PANELS` of one image and question, a row of them (or, for
an image's views, a row per panel and a column per view), that redraws only what a result changes.
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from rclib import viz
from rclib.result import CompressionResult
from rclib.views import View, as_views, on_cells, token_count

# The artists drawn for each result (rclib.viz.outline_patches, draw_fates), and the tile borders over them.
RESULT_GIDS = ("outline", "fates", "tiles")


class LiveFigure:
    """The panels (default every entry of :data:`rclib.viz.PANELS`, in order) of one image and question, kept
    for an interactive view.

    image, grid: the image and its patch grid (h, w), or the image's views (:func:`rclib.views.image_views`) and None.
    scores: name -> [N], the scores the panels map ("visual": [CLS] attention, "text": the text score).
    Everything but the result (the image, the score maps, their colour bars, the layout) is rendered once
    and kept as a background; :meth:`show` replaces what a result draws (each panel's ``draw``) and draws only
    that over the background; :meth:`png` encodes the pixels, ``pixel_ratio`` device pixels per CSS pixel
    (:attr:`css_size`: the size to show it at). The fate legend is left out (an interactive view shows it once
    beside the figure).
    """

    def __init__(self, image, grid, scores: dict, result: CompressionResult,
                 panels: tuple[viz.Panel, ...] = tuple(viz.PANELS.values()), css_dpi: int = 96, pixel_ratio: int = 2,
                 counts: dict | None = None):
        self.views = as_views(image, grid)
        self.panels = panels
        with viz.style():
            self.axes = viz.panel_axes(tuple(panel.kind for panel in panels), self.views)
            viz.draw_views(panels, self.axes, self.views, scores)
        self.figure = self.axes[0].figure
        width, height = self.figure.get_size_inches()
        self.css_size = (round(width * css_dpi), round(height * css_dpi))  # (w, h): the px a page shows it at
        self.figure.set_dpi(css_dpi * pixel_ratio)  # device pixels: sharp on a screen of that pixel ratio
        FigureCanvasAgg(self.figure)  # pixels to copy, whatever the notebook's backend
        self.figure.draw_without_rendering()  # constrained layout runs once, here
        self.figure.set_layout_engine("none")
        self.render_background()
        self.show(result, counts)

    def fits(self, views: list[View]) -> bool:
        """Whether ``views`` have this figure's cells, view by view: their images and scores can change in place."""
        return len(views) == len(self.views) and all(
            np.array_equal(new.cells, old.cells) for new, old in zip(views, self.views))

    def render_background(self) -> None:
        """Render everything but the result and keep the pixels."""
        for artist in self.result_artists():
            artist.set_visible(False)
        self.figure.canvas.draw()
        self.background = self.figure.canvas.copy_from_bbox(self.figure.bbox)

    def show_scores(self, image, scores: dict, result: CompressionResult, counts: dict | None = None) -> None:
        """Another image or question on the same cells (:meth:`fits`; image: an image of this figure's one grid, or
        views): the pictures and the score maps change in place (their colour bars follow), the layout stays, then
        ``result`` is drawn."""
        views = image if isinstance(image, list) else as_views(image, self.views[0].cells)
        n = token_count(views)
        for (panel, v, view), ax in zip(viz.panel_views(self.panels, views), self.axes):
            next(a for a in ax.images if a.get_gid() == "image").set_data(view.image)
            if panel.scores is not None:
                values = viz.as_numpy(scores[panel.scores])[:n]
                heat = next(a for a in ax.images if a.get_gid() == "score")
                heat.set_data(on_cells(values, view.cells))
                heat.set_clim(*viz.score_range(values))
        self.render_background()
        self.show(result, counts)

    def result_artists(self) -> list:
        """What a result draws (the outlines, the fate layers, the tile borders over them), and the titles of the
        panels a result titles."""
        drawn = [a for ax in self.axes for a in (*ax.images, *ax.collections) if a.get_gid() in RESULT_GIDS]
        return drawn + [ax.title for (panel, _, _), ax in zip(viz.panel_views(self.panels, self.views), self.axes)
                        if panel.title is None]

    def show(self, result: CompressionResult, counts: dict | None = None) -> None:
        """Draw ``result`` (sample 0) in place of the previous one; counts: its token counts in the model's units
        for the titles (``Run.counts``), default the result's."""
        with viz.style():
            viz.draw_result(self.panels, self.axes, result, self.views, viz.fate_title(result, counts))
            canvas = self.figure.canvas
            canvas.restore_region(self.background)
            for artist in self.result_artists():
                artist.set_visible(True)
                self.figure.draw_artist(artist)

    def png(self) -> bytes:
        """The figure as PNG bytes (fast compression: an interactive view encodes it on every change)."""
        buffer = io.BytesIO()
        pixels = np.asarray(self.figure.canvas.buffer_rgba())[..., :3]  # [H, W, 3] uint8
        Image.fromarray(pixels).save(buffer, format="png", compress_level=1)
        return buffer.getvalue()
