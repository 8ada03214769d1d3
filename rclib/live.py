"""The explorer's figure, kept live: a row of :data:`rclib.viz.PANELS` of one image and question that redraws only
what a result changes.
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from rclib import viz
from rclib.result import CompressionResult

RESULT_GIDS = ("outline", "fates")  # the artists a panel's draw makes (rclib.viz.outline_patches, draw_fates)


class LiveFigure:
    """A row of panels (default every entry of :data:`rclib.viz.PANELS`, in order) of one image and question, kept
    for an interactive view.

    scores: name -> [N], the scores the panels map ("visual": [CLS] attention, "text": the text score).
    Everything but the result (the image, the score maps, their colour bars, the layout) is rendered once
    and kept as a background; :meth:`show` replaces what a result draws (each panel's ``draw``) and draws only
    that over the background; :meth:`png` encodes the pixels, ``pixel_ratio`` device pixels per CSS pixel
    (:attr:`css_size`: the size to show it at). The fate legend is left out (an interactive view shows it once
    beside the figure).
    """

    def __init__(self, image, grid: tuple[int, int], scores: dict, result: CompressionResult,
                 panels: tuple[viz.Panel, ...] = tuple(viz.PANELS.values()), css_dpi: int = 96, pixel_ratio: int = 2):
        self.grid = grid
        self.panels = panels
        with viz.style():
            self.axes = viz.panel_axes(tuple(panel.kind for panel in panels))
            for panel, ax in zip(panels, self.axes):
                viz.draw_panel(panel, ax, image, grid, scores)
        self.figure = self.axes[0].figure
        width, height = self.figure.get_size_inches()
        self.css_size = (round(width * css_dpi), round(height * css_dpi))  # (w, h): the px a page shows it at
        self.figure.set_dpi(css_dpi * pixel_ratio)  # device pixels: sharp on a screen of that pixel ratio
        FigureCanvasAgg(self.figure)  # pixels to copy, whatever the notebook's backend
        self.figure.draw_without_rendering()  # constrained layout runs once, here
        self.figure.set_layout_engine("none")
        self.render_background()
        self.show(result)

    def render_background(self) -> None:
        """Render everything but the result and keep the pixels."""
        for artist in self.result_artists():
            artist.set_visible(False)
        self.figure.canvas.draw()
        self.background = self.figure.canvas.copy_from_bbox(self.figure.bbox)

    def show_scores(self, image, scores: dict, result: CompressionResult) -> None:
        """Another image or question on the same patch grid: the image and the score maps change in place (their
        colour bars follow), the layout stays, then ``result`` is drawn."""
        h, w = self.grid
        for panel, ax in zip(self.panels, self.axes):
            next(a for a in ax.images if a.get_gid() == "image").set_data(image)
            if panel.scores is not None:
                heat = next(a for a in ax.images if a.get_gid() == "score")
                heat.set_data(viz.as_numpy(scores[panel.scores]).reshape(h, w))
                heat.autoscale()
        self.render_background()
        self.show(result)

    def result_artists(self) -> list:
        """What a result draws: the outlines, the fate layers, the titles of the panels a result titles."""
        drawn = [a for ax in self.axes for a in (*ax.images, *ax.collections) if a.get_gid() in RESULT_GIDS]
        return drawn + [ax.title for panel, ax in zip(self.panels, self.axes) if panel.title is None]

    def show(self, result: CompressionResult) -> None:
        """Draw ``result`` (sample 0) in place of the previous one."""
        with viz.style():
            viz.draw_result(self.panels, self.axes, result, self.grid)
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
