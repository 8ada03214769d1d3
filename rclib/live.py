"""The explorer's figure, kept live: the :data:`rclib.viz.PANELS` of one image and question, a row of them (for an
image's views, a row per view: a figure as wide as a page and low enough for a slide), that redraws only what a
result changes.
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.transforms import Bbox
from PIL import Image

from rclib import viz
from rclib.result import CompressionResult
from rclib.views import View, as_views, on_cells, token_count

# The artists drawn for each result (rclib.viz.outline_patches, draw_fates), and the tile borders over them.
RESULT_GIDS = ("outline", "fates", "tiles")
LINE_PAD = 3.0  # points around a panel's tight box that a new drawing of it clears: its lines' antialiased edges


class LiveFigure:
    """The panels (default every entry of :data:`rclib.viz.PANELS`, in order) of one image and question, kept
    for an interactive view.

    image, grid: the image and its patch grid (h, w), or the image's views (:func:`rclib.views.image_views`) and None.
    scores: name -> [N], the scores the panels map ("visual": [CLS] attention, "text": the text score).
    Everything but the result (the image, the score maps, their colour bars, the layout) is rendered once
    and kept as a background (:meth:`show_scores` renders again only the panels a new image or question changes);
    :meth:`show` replaces what a result draws (each panel's ``draw``) and draws only that over the background;
    :meth:`jpeg` encodes the pixels, ``pixel_ratio`` device pixels per CSS pixel (:attr:`css_size`: the size to
    show it at). The fate legend is left out (an interactive view shows it once beside the figure).
    """

    def __init__(self, image, grid, scores: dict, result: CompressionResult,
                 panels: tuple[viz.Panel, ...] = tuple(viz.PANELS.values()), css_dpi: int = 96, pixel_ratio: int = 2,
                 counts: dict | None = None):
        self.views = as_views(image, grid)
        self.panels = panels
        with viz.style():
            self.axes = viz.panel_axes(tuple(panel.kind for panel in panels), self.views, by_view=True)
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

    def render_background(self, panels: list | None = None) -> None:
        """Render everything but the result and keep the pixels. panels: only these axes (each with its colour bar
        and title) over the kept pixels, what they covered cleared first; the whole figure where what they cover,
        before or after, touches another panel."""
        for artist in self.result_artists():
            artist.set_visible(False)
        canvas = self.figure.canvas
        renderer = canvas.get_renderer()
        if panels is not None:
            pad = LINE_PAD * self.figure.dpi / 72  # a tight box ends at the spines' middle: their width and more
            regions = [Bbox.union([self.extents[ax], ax.get_tightbbox(renderer)]).padded(pad) for ax in panels]
            others = [self.extents[ax].padded(pad) for ax in self.axes if ax not in panels]
            if any(region.overlaps(other) for region in regions for other in others):
                panels = None
        if panels is None:
            canvas.draw()
        else:
            canvas.restore_region(self.background)
            pixels = np.asarray(canvas.buffer_rgba())  # [H, W, 4], rows from the top; written in place
            blank = np.round(np.array(to_rgba(self.figure.get_facecolor())) * 255).astype(np.uint8)
            for region in regions:
                x0, y0, x1, y1 = np.round(region.extents).astype(int)
                pixels[max(0, len(pixels) - y1):len(pixels) - max(0, y0), max(0, x0):x1] = blank
            for ax in panels:
                self.figure.draw_artist(ax)
        self.background = canvas.copy_from_bbox(self.figure.bbox)
        self.extents = {ax: ax.get_tightbbox(renderer) for ax in self.axes}  # what each panel covers

    def show_scores(self, image, scores: dict, result: CompressionResult, counts: dict | None = None) -> None:
        """Another image or question on the same cells (:meth:`fits`; image: an image of this figure's one grid, or
        views): the pictures and the score maps change in place (their colour bars follow), the layout stays, then
        ``result`` is drawn."""
        views = image if isinstance(image, list) else as_views(image, self.views[0].cells)
        n = token_count(views)
        changed = []  # the axes whose picture or score map is new (a new question: the text score's only)
        for (panel, v, view), ax in zip(viz.panel_views(self.panels, views), self.axes):
            picture = next(a for a in ax.images if a.get_gid() == "image")
            new = not np.array_equal(picture.get_array(), view.image)
            if new:
                picture.set_data(view.image)
            if panel.scores is not None:
                values = viz.as_numpy(scores[panel.scores])[:n]
                heat = next(a for a in ax.images if a.get_gid() == "score")
                mapped = on_cells(values, view.cells)
                if not np.array_equal(np.ma.getdata(heat.get_array()), mapped, equal_nan=True):
                    heat.set_data(mapped)
                    heat.set_clim(*viz.score_range(values))
                    new = True
            if new:
                changed.append(ax)
        self.render_background(changed if len(changed) < len(self.axes) else None)
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

    def jpeg(self) -> bytes:
        """The figure as JPEG bytes: an interactive view encodes it on every change, and a JPEG takes a tenth of a
        PNG's time (4 ms for the explorer's 2,016 x 528 px on this machine's CPU, 42 ms at PNG's fastest). Quality
        90 without colour subsampling: at two device pixels per CSS pixel the edges look as in the PNG."""
        buffer = io.BytesIO()
        pixels = np.asarray(self.figure.canvas.buffer_rgba())[..., :3]  # [H, W, 3] uint8
        Image.fromarray(pixels).save(buffer, format="jpeg", quality=90, subsampling=0)
        return buffer.getvalue()
