"""What every figure here shares: rclib's matplotlib style, the fate colour code, figures outside pyplot, and the
geometry of a table of image panels.

Nothing here draws a map or a curve (:mod:`rclib.viz` draws the maps, :mod:`rclib.charts` the figures without an
image); importing this module changes no matplotlib setting. ``with viz.style(): ...`` gives your own figures the
same look. Figures here are at most :data:`MAX_WIDTH` inches wide; an image panel is :data:`PANEL` inches on a side in
every figure, so that a notebook's maps line up.
"""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure

from rclib.result import Fate
from rclib.views import View

# The colour code of the fates, the same in every figure, notebook and the CLI.
FATE_COLOURS: dict[Fate, str] = {
    Fate.KEPT: "#1c7ed6",  # blue: kept unchanged (by RC's visual filter, by another method's own selection)
    Fate.RECOVERED: "#f76707",  # orange: recovered by the text stage
    Fate.CENTRE: "#2b8a3e",  # dark green: a merge centre (its cluster colour fills the patch, a star marks it)
    Fate.MERGED: "#8ce99a",  # light green: merged (into the extra token when no cluster colour applies)
    Fate.DROPPED: "#343a40",  # dark grey: reaches the LLM in no form
}
MAX_WIDTH = 10.5  # inches: the widest figure here, 1,050 px at a notebook's 100 dpi (a 1,280 px window's column)
PANEL = 2.1  # inches: the side of an image panel, the same in every figure (a notebook's maps line up)
SLOT_WIDTHS = {"image": PANEL + 0.2, "heat": PANEL + 0.85, "fates": PANEL + 0.2}  # inches per panel kind (bar, pads)
TITLE = 0.55  # inches above a row of panels for their (two-line) titles
HEADER = 0.45  # inches above a table of views for the views' (two-line) titles
WIDEST = 2.5  # a view's panels are at most this many PANELs wide (a wide tiles' picture gets lower)
LEGEND = 0.6  # inches below a figure for the fate legend
STYLE = {**sns.axes_style("white"), **sns.plotting_context("notebook")}  # rcParams of every figure here


def style():
    """rclib's figure style as a context manager (``with viz.style(): ...``) or a decorator (``@style()``);
    the user's matplotlib settings are restored on exit."""
    return mpl.rc_context(STYLE)


def notebook_figures() -> None:
    """A notebook's inline figures at the resolution they are shown: PNGs drawn at twice their size in CSS pixels
    (sharp on a high-density screen), cropped to what is drawn. Figures here are at most :data:`MAX_WIDTH` inches,
    so a 1,280 px window shows them unscaled."""
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("retina", bbox_inches="tight")


def table(frame, digits: int = 2, na_rep: str = ""):
    """A DataFrame as HTML in a box of its own that scrolls sideways when the table is wider than the page (a
    notebook's column never cuts it off); numbers to ``digits`` places, missing values as ``na_rep``."""
    from IPython.display import HTML

    inner = frame.style.format(precision=digits, na_rep=na_rep).to_html()
    return HTML(f'<div class="rclib-table" style="overflow-x: auto; max-width: 100%">{inner}</div>')


def close(figure: Figure) -> None:
    """Free a figure's memory once saved (figures here are never registered with pyplot)."""
    figure.clear()


def new_figure(size: tuple[float, float], layout: str | None = "constrained") -> Figure:
    """A figure outside pyplot's registry: a notebook shows it once, as a cell's value, and it is
    freed like any object (no "too many open figures" in long sessions). layout None: the caller places
    the axes."""
    figure = plt.figure(figsize=size, layout=layout)
    plt.close(figure)
    return figure


def as_numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def new_axes(ax, size: tuple[float, float] = (4.2, 4.2)):
    """The given axes, or the single axes of a new figure."""
    if ax is not None:
        return ax
    return new_figure(size).add_subplot()


def view_size(shape: tuple[int, int]) -> tuple[float, float]:
    """(width, height) in inches of the panels of an h x w view in a table of views: PANEL high and as wide as
    the view, at most WIDEST panels wide (then lower)."""
    aspect = shape[1] / shape[0]
    return (PANEL * aspect, PANEL) if aspect <= WIDEST else (PANEL * WIDEST, PANEL * WIDEST / aspect)


def panel_table(kinds: tuple[str, ...], views: list[View] | None = None, by_view: bool = False
                ) -> tuple[list[list[tuple]], list[str]]:
    """A figure's panels row by row, each (kind, (width, height) in inches), and the views' titles: for one view
    (None: one patch grid) a row of ``kinds``, PANEL squares, no titles; for several, a row per kind and a column per
    view (:func:`view_size`), titled above, or with ``by_view`` a row per view and a column per kind, titled beside
    (a figure as wide as the page and low enough for a slide: its panels shrink to fit :data:`MAX_WIDTH`). Either way
    the axes go kind by kind, then view (:func:`panel_axes`)."""
    if views is None or len(views) == 1:
        return [[(kind, (PANEL, PANEL)) for kind in kinds]], []
    titles = [view.title for view in views]
    if not by_view:
        return [[(kind, view_size(view.cells.shape)) for view in views] for kind in kinds], titles
    sizes = [view_size(view.cells.shape) for view in views]
    room = MAX_WIDTH - HEADER - sum(SLOT_WIDTHS[kind] - PANEL for kind in kinds)  # for the panels themselves
    scale = min(1.0, room / (len(kinds) * max(width for width, _ in sizes)))
    return [[(kind, (width * scale, height * scale)) for kind in kinds] for width, height in sizes], titles


def table_extent(table: list[list[tuple]]) -> tuple[list[float], list[float]]:
    """Column widths and row heights in inches of a :func:`panel_table`: each panel's slot (:data:`SLOT_WIDTHS`:
    a heatmap's holds its colour bar), its title above."""
    widths = [max(width + SLOT_WIDTHS[kind] - PANEL for kind, (width, _) in column) for column in zip(*table)]
    return widths, [max(height for _, (_, height) in row) + TITLE for row in table]


def table_size(table: list[list[tuple]], headers: list[str], beside: bool = False) -> tuple[float, float]:
    """(width, height) in inches of a :func:`panel_table` with its views' titles (if any) above its columns, or
    ``beside`` its rows."""
    widths, heights = table_extent(table)
    return sum(widths) + HEADER * (bool(headers) and beside), sum(heights) + HEADER * (bool(headers) and not beside)


def place_panels(figure, table: list[list[tuple]], left: float, bottom: float, headers: list[str] = (),
                 beside: bool = False) -> list:
    """The axes of a :func:`panel_table` on a figure without a layout engine, row by row, its lower left corner at
    (left, bottom) in inches, a panel centred below its title; headers: a bold title above each column, or
    ``beside`` each row (turned upright, left of it), if any."""
    width, height = figure.get_size_inches()
    widths, heights = table_extent(table)
    top = bottom + sum(heights)
    if beside and headers:
        left += HEADER
        middles = top - np.cumsum(heights) + np.array(heights) / 2  # of each row, its panels' titles included
        for y, header in zip(middles, headers):  # a size smaller than above: the lowest rows hold its length
            figure.text((left - HEADER / 2) / width, y / height, header, ha="center", va="center", rotation=90,
                        fontsize=9, fontweight="bold")
    else:
        for x, (_, (panel, _)), header in zip(np.cumsum([left, *widths]), table[0], headers):
            figure.text((x + panel / 2) / width, (top + HEADER / 2) / height, header, ha="center", va="center",
                        fontsize=10, fontweight="bold")
    axes = []
    for row, row_height in zip(table, heights):
        top -= row_height
        for x, (_, (w, h)) in zip(np.cumsum([left, *widths]), row):
            y = top + (row_height - TITLE - h) / 2
            axes.append(figure.add_axes((x / width, y / height, w / width, h / height)))
    return axes


def panel_axes(kinds: tuple[str, ...], views: list[View] | None = None, legend: bool = False,
               by_view: bool = False) -> list:
    """The image panels of the given kinds in a new figure (:func:`panel_table`: a row of PANEL squares for one
    view, a column per view for several, ``by_view`` a row per view), the panels' titles above, the views' above
    their columns (``by_view``: beside their rows); legend: room below for the fate legend. The axes go kind by
    kind, then view."""
    bottom = LEGEND if legend else 0.1
    table, headers = panel_table(kinds, views, by_view)
    width, height = table_size(table, headers, by_view)
    axes = place_panels(new_figure((width, height + bottom), layout=None), table, 0.1, bottom, headers, by_view)
    if not (by_view and headers):
        return axes
    return [axes[v * len(kinds) + k] for k in range(len(kinds)) for v in range(len(headers))]  # rows were views
