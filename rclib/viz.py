"""Maps of compression results on their image: score maps, token-fate maps, the overview, the token sequence, the
method grid; and the figure API's namespace, ``viz.<name>`` for every figure function.

Every function draws what it is given (an image, a result, score vectors) and returns a matplotlib Figure; nothing
here runs a model or computes a score. Drawing functions take an optional ``ax`` (or ``axes``) so that bigger figures
compose them; without one they make their own figure. The name of the tokens a method keeps comes from its
:class:`~rclib.methods.MethodSpec`; the panels of a row of maps (the explorer's figure, :mod:`rclib.live`) are
:data:`PANELS`, one entry each. The figures without an image (the filter's cut, accuracy against tokens) are
:mod:`rclib.charts`'; the style, the fate colour code and the panel geometry every figure shares are
:mod:`rclib.plotting`'s. Both are re-exported here (``viz.accuracy_vs_tokens``, ``viz.style``, ``viz.PANEL``, ...).

Images are uint8 HWC arrays of exactly what the patch grid covers (``CompressedModel.display_images``
gives them); the patch grid is drawn in patch units, so patch ``n`` of a ``(h, w)`` grid fills the
unit square at row ``n // w``, column ``n % w``. A ``grid`` is that (h, w), or a view's cells (the token at each
cell, :class:`rclib.views.View`). An image of a tiled family is drawn as its views (:func:`rclib.views.image_views`:
the base view, the tiles' picture with the borders of its tiles): the figures given them draw a row per panel
and a column per view. One colour code for the fates (:data:`FATE_COLOURS`) is used by every figure, notebook and
the CLI.

Style: each drawing function applies :func:`style` for itself; importing this module changes no
matplotlib setting. ``with viz.style(): ...`` gives your own figures the same look.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from functools import partial
from typing import Callable

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from rclib.charts import (
    OTHER_MARKERS,
    PANELS_PER_ROW,
    accuracy_vs_tokens,
    dodge,
    filter_histogram,
    filter_thresholds,
    method_style,
)
from rclib.methods import METHODS
from rclib.plotting import (
    FATE_COLOURS,
    HEADER,
    LEGEND,
    MAX_WIDTH,
    PANEL,
    SLOT_WIDTHS,
    STYLE,
    TITLE,
    WIDEST,
    as_numpy,
    close,
    new_axes,
    new_figure,
    notebook_figures,
    panel_axes,
    panel_table,
    place_panels,
    style,
    table,
    table_extent,
    table_size,
    view_size,
)
from rclib.result import CompressionResult, Fate, Slot
from rclib.views import View, as_cells, as_views, on_cells, token_count

__all__ = [  # the maps, and what rclib.plotting and rclib.charts define: viz.<name> for the whole figure API
    "CLUSTER_PALETTE", "CLUSTER_SLOTS", "CVD_DISTANCE", "FATE_COLOURS", "FATE_LABELS", "GRID_COLUMNS", "HEADER",
    "IMAGE_TITLE", "LEGEND", "MAX_WIDTH", "OTHER_MARKERS", "OVERLAY_ALPHA", "PANEL", "PANELS", "PANELS_PER_ROW",
    "SCORE_TITLES", "SLOT_FATES", "SLOT_WIDTHS", "STYLE", "TITLE", "WIDEST", "Panel", "accuracy_vs_tokens",
    "as_numpy", "close", "cluster_borders", "cluster_colours", "dodge", "draw_fates", "draw_panel", "draw_result",
    "draw_tile_lines", "draw_views", "fate_legend", "fate_map", "fate_title", "filter_histogram",
    "filter_thresholds", "method_grid", "method_style", "new_axes", "new_figure", "notebook_figures",
    "outline_fate", "outline_patches", "outline_segments", "overview", "panel_axes", "panel_figure", "panel_table",
    "panel_views", "patch_colours", "place_panels", "result_legend", "score_heatmap", "score_maps", "score_range",
    "show_image", "style", "table", "table_extent", "table_size", "token_sequence", "view_size",
]

FATE_LABELS: dict[Fate, str] = {
    Fate.KEPT: "kept",  # a method's legend names what picked them (MethodSpec.kept_label)
    Fate.RECOVERED: "recovered (text)",
    Fate.CENTRE: "merge centre",
    Fate.MERGED: "merged into the extra token",
    Fate.DROPPED: "dropped",
}
# Output slots drawn in the fate colour of the tokens they hold; merged slots get their cluster colour.
SLOT_FATES: dict[Slot, Fate] = {Slot.KEPT: Fate.KEPT, Slot.RECOVERED: Fate.RECOVERED, Slot.CENTRE: Fate.CENTRE,
                                Slot.EXTRA: Fate.MERGED, Slot.POOLED: Fate.MERGED}
CLUSTER_SLOTS = (Slot.CENTRE, Slot.POOLED)  # slots that gather a cluster of tokens, one colour each
# Colours of merged clusters: each at least CVD_DISTANCE (CIELAB) from every fate colour for normal vision and
# under simulated protanopia, deuteranopia and tritanopia (tests/test_viz.py), so a cluster never reads as kept,
# recovered, extra or dropped; pink, yellow, brown, lavender, orchid, pale yellow, light grey, light purple.
CLUSTER_PALETTE = ["#f781bf", "#ffff33", "#a65628", "#9e9ac8", "#e78ac3", "#ffed6f", "#c7c7c7", "#cab2d6"]
CVD_DISTANCE = 25.0  # the least CIELAB distance between a cluster colour and a fate colour, in any vision
GRID_COLUMNS = 6  # method_grid: panels per line (the plain image, then the methods), lines wrap
OVERLAY_ALPHA = 0.6  # opacity of patch colours over the image
IMAGE_TITLE = "the image"
SCORE_TITLES = ("visual score\n([CLS] attention)", "text score\n(question vs patch)")


def show_image(ax, image, grid, title: str = "") -> None:
    """The image stretched over the patch grid (or a view's cells), in patch units, without ticks."""
    h, w = as_cells(grid).shape
    ax.imshow(image, extent=(0, w, h, 0), interpolation="bilinear", gid="image")
    ax.set(xlim=(0, w), ylim=(h, 0), xticks=[], yticks=[])
    ax.set_title(title, fontsize=10)


def draw_tile_lines(ax, view: View) -> None:
    """The borders between a view's tiles, dashed white lines over everything a panel shows."""
    if view.lines:
        ax.add_collection(LineCollection(view.lines, colors="white", linewidths=1.2, linestyles="--", zorder=4,
                                         gid="tiles"))


def outline_segments(selected, grid) -> list:
    """The squares around the selected patches (selected: [N] bool), one closed polyline each, in patch units."""
    rows, columns = np.nonzero(on_cells(as_numpy(selected), as_cells(grid)) == 1)
    return [[(x, y), (x + 1, y), (x + 1, y + 1), (x, y + 1), (x, y)] for y, x in zip(rows, columns)]


def outline_patches(ax, selected, grid, colour: str, width: float = 1.6) -> LineCollection:
    """A square outline around each selected patch (selected: [N] bool), as one collection; outlines drawn
    before on ``ax`` are replaced (an interactive view redraws only them)."""
    for old in [c for c in ax.collections if c.get_gid() == "outline"]:
        old.remove()
    outlines = LineCollection(outline_segments(selected, grid), colors=colour, linewidths=width, gid="outline")
    ax.add_collection(outlines)
    return outlines


def score_range(scores) -> tuple[float, float]:
    """The colour scale of a score map: the least and the greatest of the scores ([N]) given."""
    values = as_numpy(scores)
    return float(np.nanmin(values)), float(np.nanmax(values))


@style()
def score_heatmap(image, scores, grid, title: str = "score", ax=None, cmap: str = "magma",
                  highlight=None, highlight_colour: str = FATE_COLOURS[Fate.KEPT]) -> Figure:
    """A score per patch ([N]) as a translucent heatmap over the image (on a view: its cells' tokens, coloured on
    the scale of all N), with a colour bar.

    highlight: optional [N] bool, patches outlined in ``highlight_colour`` (e.g. the kept ones).
    ax: the axes to draw into; default a new figure with the plain image on the left, the heatmap on the right.
    """
    if ax is None:
        plain, ax = panel_axes(("image", "heat"))
        show_image(plain, image, grid, IMAGE_TITLE)
    cells = as_cells(grid)
    h, w = cells.shape
    show_image(ax, image, cells, title)
    low, high = score_range(scores)
    heat = ax.imshow(on_cells(as_numpy(scores), cells), extent=(0, w, h, 0), cmap=cmap, alpha=0.65, vmin=low,
                     vmax=high, interpolation="nearest", gid="score")
    scale = PANEL * ax.figure.dpi / ax.bbox.width  # a wider panel's bar keeps its inches
    bar = ax.figure.colorbar(heat, cax=ax.inset_axes((1 + 0.04 * scale, 0.0, 0.06 * scale, 1.0)))  # beside it
    bar.ax.tick_params(labelsize=8)
    bar.locator = mpl.ticker.MaxNLocator(4)
    if highlight is not None:
        outline_patches(ax, highlight, grid, highlight_colour)
    return ax.figure


@dataclass(frozen=True)
class Panel:
    """One panel of a row of maps: the image, under a score map or not (drawn once per image and question), and what
    a result draws over it (drawn again for each result, replacing what the previous one drew)."""

    kind: str  # its slot in the row (SLOT_WIDTHS)
    title: str | None  # None: the result's drawing titles it
    caption: str  # what it shows, in words ("From the left: ...")
    draw: Callable | None = None  # draw(ax, result, grid): what a result changes (gids "outline", "fates")
    scores: str | None = None  # the scores it maps: "visual" ([CLS] attention) or "text" (question vs patch)
    cmap: str = "viridis"


def outline_fate(ax, result: CompressionResult, grid, fate: Fate) -> None:
    """The patches of sample 0 whose fate is ``fate`` outlined in its colour (replacing earlier outlines)."""
    outline_patches(ax, as_numpy(result.fate[0]) == fate, grid, FATE_COLOURS[fate])


def draw_panel(panel: Panel, ax, image, grid, scores: dict, title: str | None = None) -> None:
    """What ``panel`` shows of an image and its scores (name -> [N]): the image, under its score map; title: in place
    of the panel's own."""
    title = panel.title if title is None else title
    if panel.scores is None:
        show_image(ax, image, grid, title or "")
    else:
        score_heatmap(image, scores[panel.scores], grid, title, ax=ax, cmap=panel.cmap)


def panel_views(panels, views: list[View]) -> list[tuple]:
    """(panel, view index, view) in the order of a table's axes (:func:`panel_table`): kind by kind, then view."""
    return [(panel, v, view) for panel in panels for v, view in enumerate(views)]


def draw_views(panels, axes, views: list[View], scores: dict, titles=None) -> None:
    """Each panel of each view (:func:`draw_panel`) and the views' tile borders; a score map colours all the image's
    tokens on one scale. titles: one per panel (default their own), over the first view's column."""
    n = token_count(views)
    scores = {name: as_numpy(values)[:n] for name, values in scores.items() if values is not None}
    titles = [title for title in titles or [panel.title for panel in panels] for _ in views]  # one per axes
    for (panel, v, view), ax, title in zip(panel_views(panels, views), axes, titles):
        draw_panel(panel, ax, view.image, view.cells, scores, title if v == 0 else "")
        draw_tile_lines(ax, view)


def draw_result(panels, axes, result: CompressionResult, views: list[View], title: str | None = None) -> None:
    """What ``result`` (sample 0) changes on the panels of each view, in place of what a result drew there before;
    the panels it titles get ``title`` (default :func:`fate_title`) over the first view's column."""
    for (panel, v, view), ax in zip(panel_views(panels, views), axes):
        if panel.draw is not None:
            panel.draw(ax, result, view.cells)
        if panel.title is None:
            ax.set_title((title or fate_title(result)) if v == 0 else "", fontsize=10)


def panel_figure(names: tuple[str, ...], views: list[View], scores: dict, result: CompressionResult | None,
                 titles, axes=None, legend: bool = True, counts: dict | None = None) -> Figure:
    """The :data:`PANELS` ``names`` of each view (titles: one per panel, None: its own, the fate map's
    :func:`fate_title` of ``counts``) and what ``result`` draws on them; axes: default a new figure. legend: the fate
    legend."""
    panels = [PANELS[name] for name in names]
    if axes is None:
        axes = panel_axes(tuple(panel.kind for panel in panels), views, legend and result is not None)
    draw_views(panels, axes, views, scores, titles)
    if result is not None:
        draw_result(panels, axes, result, views, dict(zip(names, titles)).get("fates") or fate_title(result, counts))
        if legend:
            result_legend(axes[0].figure, result)
    return axes[0].figure


@style()
def score_maps(image, grid, cls_attn, text_sim=None, result: CompressionResult | None = None,
               titles: tuple[str, ...] | None = None, axes=None, legend: bool = True,
               counts: dict | None = None) -> Figure:
    """The plain image and its two score maps side by side: [CLS] attention and text similarity ([N] each).

    image, grid: the image and its patch grid (h, w), or the image's views (:func:`rclib.views.image_views`) and
    None: then a row per panel, a column per view.
    text_sim: None (no text score) shows the image alone in the third panel.
    result: a result of this image (its sample 0 is drawn): the kept tokens are outlined on the first
    map, the recovered ones on the second, and its token-fate map (:func:`fate_map`) is a fourth panel.
    titles: one per panel after the plain image (default :data:`SCORE_TITLES`, then the fate map's own title).
    axes: the 3 (4 with a result) axes per view to draw into; default a new figure. legend: the fate legend, below.
    counts: token counts in the model's units for the fate map's title (``Run.counts``; default the result's).
    """
    views = as_views(image, grid)
    names = ("image", "visual", "image" if text_sim is None else "text", "fates")[:3 if result is None else 4]
    if (axes is not None and len(axes) != len(names) * len(views)) or (
            titles is not None and len(titles) != len(names) - 1):
        raise ValueError(f"score_maps draws {len(names)} panels per view (titles for all but the image); got "
                         f"{'no' if axes is None else len(axes)} axes for {len(views)} views and "
                         f"{'no' if titles is None else len(titles)} titles")
    titles = titles or SCORE_TITLES + ((None,) if result is not None else ())
    return panel_figure(names, views, {"visual": cls_attn, "text": text_sim}, result, (IMAGE_TITLE, *titles), axes,
                        legend, counts)


def cluster_colours(result: CompressionResult) -> dict[int, tuple]:
    """Output slot -> colour, for the slots that gather clusters (merge centres, pooled regions)."""
    slots = as_numpy(result.slot[0]).astype(int)
    clusters = [k for k, s in enumerate(slots) if s in CLUSTER_SLOTS]
    return {k: CLUSTER_PALETTE[i % len(CLUSTER_PALETTE)] for i, k in enumerate(clusters)}


def patch_colours(result: CompressionResult) -> np.ndarray:
    """[N, 4] RGBA per input token of a one-sample result: its fate, or its cluster's colour if merged."""
    fate = as_numpy(result.fate[0]).astype(int)
    assignment = as_numpy(result.assignment[0]).astype(int)
    clusters = cluster_colours(result)
    colours = np.array([to_rgba(FATE_COLOURS[Fate(f)], OVERLAY_ALPHA) for f in fate])
    for n, slot in enumerate(assignment):
        if fate[n] in (Fate.CENTRE, Fate.MERGED) and slot in clusters:
            colours[n] = to_rgba(clusters[slot], OVERLAY_ALPHA + 0.1)
    return colours


def cluster_borders(assignment: np.ndarray, merged: np.ndarray, grid) -> list:
    """Segments between neighbouring merged patches that belong to different output slots (assignment, merged:
    [N])."""
    cells = as_cells(grid)
    h, w = cells.shape
    a, m = on_cells(assignment, cells), on_cells(merged, cells) == 1
    segments = []
    for i in range(h):
        for j in range(w):
            if j + 1 < w and m[i, j] and m[i, j + 1] and a[i, j] != a[i, j + 1]:
                segments.append([(j + 1, i), (j + 1, i + 1)])
            if i + 1 < h and m[i, j] and m[i + 1, j] and a[i, j] != a[i + 1, j]:
                segments.append([(j, i + 1), (j + 1, i + 1)])
    return segments


def fate_legend(figure, fates=tuple(Fate), clusters: bool = True, method: str | None = None) -> None:
    """The fate legend below the figure, outside every panel: a swatch per fate (the kept ones named as ``method``
    picks them, "kept (visual)", when it is a registered one), a star for centres, one entry for the cluster colours."""
    labels = {**FATE_LABELS, Fate.KEPT: METHODS[method].kept_label} if method in METHODS else FATE_LABELS
    handles = [Patch(facecolor=FATE_COLOURS[f], label=labels[f]) for f in fates if f != Fate.CENTRE]
    if clusters:
        handles.append(Patch(facecolor=CLUSTER_PALETTE[0], label="merged into a cluster (a colour each)"))
    if Fate.CENTRE in fates:
        handles.append(Line2D([], [], marker="*", linestyle="none", markersize=9, markerfacecolor="white",
                              markeredgecolor="black", label=FATE_LABELS[Fate.CENTRE]))
    columns = 3 if figure.bbox.width / figure.dpi > 2 * PANEL + 3 else 2  # (a subfigure has no get_figwidth)
    figure.legend(handles=handles, loc="lower center", ncols=columns, fontsize=8, frameon=False)


def result_legend(figure, result: CompressionResult) -> None:
    """:func:`fate_legend` of the fates sample 0 of ``result`` holds, below ``figure``."""
    fate = as_numpy(result.fate[0])
    fate_legend(figure, [f for f in Fate if (fate == f).any()], bool(cluster_colours(result)), result.method)


def fate_title(result: CompressionResult, counts: dict | None = None) -> str:
    """The default title of a token-fate map: "method: N -> K tokens"; counts: in the model's units (``Run.counts``:
    row-end tokens included), default the result's own."""
    counts = counts or result.counts(0)
    return f"{result.method}: {counts['n_input_tokens']} -> {counts['n_output_tokens']} tokens"


def draw_fates(ax, result: CompressionResult, grid, title: str | None = None, legend: bool = True) -> None:
    """The fate layers of :func:`fate_map` over an image already on ``ax``: patch colours (none where a view's cell
    holds no token), cluster borders, centre stars, legend and title. Layers drawn before on ``ax`` are replaced (an
    interactive view redraws only them)."""
    for old in [a for a in (*ax.images, *ax.collections) if a.get_gid() == "fates"]:
        old.remove()
    cells = as_cells(grid)
    h, w = cells.shape
    colours = np.nan_to_num(on_cells(patch_colours(result), cells))  # [h, w, 4], transparent where no token
    ax.imshow(colours, extent=(0, w, h, 0), interpolation="nearest", gid="fates")
    fate = as_numpy(result.fate[0]).astype(int)
    merged = (fate == Fate.MERGED) | (fate == Fate.CENTRE)
    segments = cluster_borders(as_numpy(result.assignment[0]).astype(int), merged, cells)
    ax.add_collection(LineCollection(segments, colors="white", linewidths=0.8, gid="fates"))
    rows, columns = np.nonzero(on_cells(fate, cells) == Fate.CENTRE)
    ax.scatter(columns + 0.5, rows + 0.5, marker="*", s=60, c="white", edgecolors="black",
               linewidths=0.5, zorder=3, gid="fates")
    if legend:
        result_legend(ax.figure, result)
    ax.set_title(fate_title(result) if title is None else title, fontsize=10)


PANELS: dict[str, Panel] = {  # the explorer's figure, from the left (from the top for an image's views)
    "image": Panel("image", IMAGE_TITLE, "the image"),
    "visual": Panel("heat", SCORE_TITLES[0], "[CLS] attention, the tokens the method kept unchanged outlined in blue",
                    partial(outline_fate, fate=Fate.KEPT), "visual"),
    "text": Panel("heat", SCORE_TITLES[1], "the question's text score, the recovered tokens outlined in orange",
                  partial(outline_fate, fate=Fate.RECOVERED), "text", "magma"),
    "fates": Panel("fates", None, "what the LLM reads of each patch", partial(draw_fates, legend=False)),
}


@style()
def fate_map(image, result: CompressionResult, grid, title: str | None = None, ax=None, legend: bool = True,
             counts: dict | None = None) -> Figure:
    """What became of every patch of sample 0: kept, recovered, merged (coloured by cluster), dropped.

    Merged tokens take the colour of the output slot that holds most of them (their cluster); tokens
    only in the extra token keep the plain "merged" colour; a star marks each merge centre and thin
    white lines separate neighbouring clusters. ax: the axes to draw into; default a new figure with the plain
    image on the left, the fate map on the right (and the legend below). image, grid: as :func:`score_maps` takes
    them; an image's views get a row of plain views above a row of fate maps (ax None). counts: see
    :func:`fate_title`.
    """
    if ax is None:
        return panel_figure(("image", "fates"), as_views(image, grid), {}, result, (IMAGE_TITLE, title), None,
                            legend, counts)
    show_image(ax, image, grid)
    draw_fates(ax, result, grid, fate_title(result, counts) if title is None else title, legend)
    return ax.figure


@style()
def token_sequence(result: CompressionResult, ax=None, per_row: int | None = None, counts: dict | None = None
                   ) -> Figure:
    """The K output tokens of sample 0 in the order the LLM reads them, coloured by slot kind; counts: in the
    model's units (``Run.counts``), whose row-end tokens the title adds."""
    slots = as_numpy(result.slot[0]).astype(int)
    K = len(slots)
    per_row = per_row or max(1, min(K, 48))
    rows = -(-K // per_row)
    ax = new_axes(ax, (max(4.0, per_row * 0.18), 0.5 + 0.3 * rows))
    clusters = cluster_colours(result)
    for k, s in enumerate(slots):
        colour = clusters.get(k, FATE_COLOURS[SLOT_FATES[Slot(s)]])
        ax.add_patch(Rectangle((k % per_row, k // per_row), 0.9, 0.9, facecolor=colour, edgecolor="none"))
    ax.set(xlim=(-0.2, per_row), ylim=(rows, -0.2), xticks=[], yticks=[], aspect="equal")
    sns.despine(ax=ax, left=True, bottom=True)
    counts = counts or result.counts(0)
    row_ends = counts["n_output_tokens"] - K
    ax.set_title(f"the LLM reads K = {K} visual tokens: {counts['n_visual']} kept + {counts['n_text']} recovered "
                 f"+ {counts['n_merged']} merged" + (f" (and {row_ends} row ends)" if row_ends else ""), fontsize=10)
    return ax.figure


@style()
def overview(image, result: CompressionResult, grid, question: str = "", answer: str | None = None,
             counts: dict | None = None) -> Figure:
    """The four stages of Recoverable Compression on sample 0 of a result, after the paper's Figure 1.

    1. visual score ([CLS] attention) -> kept tokens; 2. text score -> recovered tokens;
    3. the rest merged into clusters; 4. the token sequence the LLM reads. The scores are the ones the
    result records (``result.scores``: "visual", and "text" when the method used it). image, grid: as
    :func:`score_maps` takes them (an image's views: a row per stage, a column per view); counts: the token counts
    in the model's units (``Run.counts``), default the result's.
    """
    views = as_views(image, grid)
    counts = counts or result.counts(0)
    text = result.scores.get("text")
    kinds = ("image", "heat", "image" if text is None else "heat", "fates")
    table, headers = panel_table(kinds, views)
    maps_width, maps_height = table_size(table, headers)
    sequence = 0.3 * -(-len(result.slot[0]) // 48) + 0.5  # inches for the token sequence's rows and title
    figure = new_figure((maps_width, maps_height + 0.35 + sequence + LEGEND),
                        layout=None)  # top to bottom: the question, the maps, the token sequence, the fate legend
    titles = (f"1. visual score\n-> {counts['n_visual']} kept",
              "2. no text stage" if text is None else f"2. text score\n-> {counts['n_text']} recovered",
              f"3. the rest:\n{counts['n_merged']} merged tokens")
    score_maps(views, None, result.scores["visual"][0], None if text is None else text[0], result, titles,
               axes=place_panels(figure, table, 0.1, LEGEND + sequence, headers))
    width, height = figure.get_size_inches()
    sequence_box = (0.3 / width, LEGEND / height, 1 - 0.6 / width, (sequence - 0.4) / height)
    token_sequence(result, ax=figure.add_axes(sequence_box), counts=counts)
    answered = f"  ->  answer: {answer}" if answer is not None else ""
    figure.suptitle(f"Q: {question}{answered}" if question else result.method, fontsize=12)
    return figure


@style()
def method_grid(images: list, results: dict[str, CompressionResult], grid,
                row_titles: list[str] | None = None) -> Figure:
    """Token-fate maps of several methods on the same images: per image its row title (the question) above, then per
    view of it the plain view and a map per method, :data:`GRID_COLUMNS` panels to a line; the fate legend below all.

    images, grid: the images and their patch grid (h, w), or each image's views (:func:`rclib.views.image_views`: a
    tiled image's base view and tiles' picture, each a line of its own) and None.
    results: method -> a result batched over ``images`` (sample b belongs to images[b]).
    """
    methods = list(results)
    views = [as_views(image, grid) for image in images]
    slot = (MAX_WIDTH - 0.2) / GRID_COLUMNS  # inches per panel and its gap
    side = slot - 0.15  # a panel's side
    line = side + TITLE / 2  # inches per line of panels: its titles, then the panels
    lines = -(-(len(methods) + 1) // GRID_COLUMNS)  # lines per view
    blocks = [TITLE / 2 + len(shown) * lines * line for shown in views]  # inches per image: its title, its lines
    height = sum(blocks) + LEGEND
    figure = new_figure((MAX_WIDTH, height), layout=None)
    top = height
    for b, shown in enumerate(views):
        if row_titles:
            figure.text(0.1 / MAX_WIDTH, (top - 0.2) / height, textwrap.shorten(row_titles[b], 140), fontsize=10,
                        fontweight="bold", va="center")
        for v, view in enumerate(shown):
            for i, method in enumerate([None, *methods]):
                row, column = divmod(v * lines * GRID_COLUMNS + i, GRID_COLUMNS)
                bottom = top - TITLE / 2 - row * line - line
                ax = figure.add_axes(((0.1 + column * slot) / MAX_WIDTH, bottom / height, side / MAX_WIDTH,
                                      side / height))
                if method is None:
                    show_image(ax, view.image, view.cells, view.title.split("\n")[0] or IMAGE_TITLE)
                else:
                    one = results[method][b]
                    fate_map(view.image, one, view.cells, f"{method}: K = {int(one.n_output[0])}", ax=ax, legend=False)
                draw_tile_lines(ax, view)
        top -= blocks[b]
    fate_legend(figure)
    return figure
