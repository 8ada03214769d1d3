"""Figures from compression results: score maps, token-fate maps, the overview, the filter's cut, curves.

Every function draws what it is given (an image, a result, score vectors, a filter decision, bench
rows) and returns a matplotlib Figure; nothing here runs a model or computes a score. Drawing
functions take an optional ``ax`` (or ``axes``) so that bigger figures compose them; without one they
make their own figure. A method's curve style and the name of the tokens it keeps come from its
:class:`~rclib.methods.MethodSpec`; the panels of a row of maps (the explorer's figure, :mod:`rclib.live`) are
:data:`PANELS`, one entry each.

Images are uint8 HWC arrays of exactly what the patch grid covers (``CompressedLlava.display_images``
gives them); the patch grid is drawn in patch units, so patch ``n`` of a ``(h, w)`` grid fills the
unit square at row ``n // w``, column ``n % w``. One colour code for the fates (:data:`FATE_COLOURS`)
is used by every figure, notebook and the CLI.

Style: each drawing function applies :func:`style` for itself; importing this module changes no
matplotlib setting. ``with viz.style(): ...`` gives your own figures the same look.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from functools import partial
from typing import Callable

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from rclib.methods import METHODS
from rclib.methods.registry import PlotStyle
from rclib.result import CompressionResult, Fate, Slot

FATE_COLOURS: dict[Fate, str] = {
    Fate.KEPT: "#1c7ed6",  # blue: kept unchanged (by RC's visual filter, by another method's own selection)
    Fate.RECOVERED: "#f76707",  # orange: recovered by the text stage
    Fate.CENTRE: "#2b8a3e",  # dark green: a merge centre (its cluster colour fills the patch, a star marks it)
    Fate.MERGED: "#8ce99a",  # light green: merged (into the extra token when no cluster colour applies)
    Fate.DROPPED: "#343a40",  # dark grey: reaches the LLM in no form
}
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
OTHER_MARKERS = "o s ^ v D P X h < >".split()  # for labels that name no method, with matplotlib's colour cycle
PANELS_PER_ROW = 3  # accuracy_vs_tokens wraps its panels
GRID_COLUMNS = 6  # method_grid: panels per line (the plain image, then the methods), lines wrap
MAX_WIDTH = 10.5  # inches: the widest figure here, 1,050 px at a notebook's 100 dpi (a 1,280 px window's column)
PANEL = 2.1  # inches: the side of an image panel, the same in every figure (a notebook's maps line up)
SLOT_WIDTHS = {"image": PANEL + 0.2, "heat": PANEL + 0.85, "fates": PANEL + 0.2}  # inches per panel kind (bar, pads)
TITLE = 0.55  # inches above a row of panels for their (two-line) titles
LEGEND = 0.6  # inches below a figure for the fate legend
OVERLAY_ALPHA = 0.6  # opacity of patch colours over the image
IMAGE_TITLE = "the image"
SCORE_TITLES = ("visual score\n([CLS] attention)", "text score\n(question vs patch)")
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


def place_panels(figure, kinds: tuple[str, ...], left: float, bottom: float) -> list:
    """A row of PANEL-inch square axes on a figure without a layout engine, one per kind (:data:`SLOT_WIDTHS`:
    "image", "heat", "fates"; a heatmap's slot holds its colour bar), from (left, bottom) in inches."""
    width, height = figure.get_size_inches()
    axes = []
    for kind in kinds:
        axes.append(figure.add_axes((left / width, bottom / height, PANEL / width, PANEL / height)))
        left += SLOT_WIDTHS[kind]
    return axes


def panel_axes(kinds: tuple[str, ...], legend: bool = False) -> list:
    """One row of image panels of the given kinds (:func:`place_panels`) in a new figure, every image PANEL
    inches square whatever the kind, titles above; legend: room below for the fate legend."""
    bottom = LEGEND if legend else 0.1
    figure = new_figure((sum(SLOT_WIDTHS[kind] for kind in kinds), PANEL + TITLE + bottom), layout=None)
    return place_panels(figure, kinds, 0.1, bottom)


def show_image(ax, image, grid: tuple[int, int], title: str = "") -> None:
    """The image stretched over the patch grid, in patch units, without ticks."""
    h, w = grid
    ax.imshow(image, extent=(0, w, h, 0), interpolation="bilinear", gid="image")
    ax.set(xlim=(0, w), ylim=(h, 0), xticks=[], yticks=[])
    ax.set_title(title, fontsize=10)


def outline_segments(selected, grid: tuple[int, int]) -> list:
    """The squares around the selected patches (selected: [N] bool), one closed polyline each, in patch units."""
    w = grid[1]
    return [[(x, y), (x + 1, y), (x + 1, y + 1), (x, y + 1), (x, y)]
            for x, y in ((n % w, n // w) for n in np.flatnonzero(as_numpy(selected)))]


def outline_patches(ax, selected, grid: tuple[int, int], colour: str, width: float = 1.6) -> LineCollection:
    """A square outline around each selected patch (selected: [N] bool), as one collection; outlines drawn
    before on ``ax`` are replaced (an interactive view redraws only them)."""
    for old in [c for c in ax.collections if c.get_gid() == "outline"]:
        old.remove()
    outlines = LineCollection(outline_segments(selected, grid), colors=colour, linewidths=width, gid="outline")
    ax.add_collection(outlines)
    return outlines


@style()
def score_heatmap(image, scores, grid: tuple[int, int], title: str = "score", ax=None, cmap: str = "magma",
                  highlight=None, highlight_colour: str = FATE_COLOURS[Fate.KEPT]) -> Figure:
    """A score per patch ([N]) as a translucent heatmap over the image, with a colour bar.

    highlight: optional [N] bool, patches outlined in ``highlight_colour`` (e.g. the kept ones).
    ax: the axes to draw into; default a new figure with the plain image on the left, the heatmap on the right.
    """
    if ax is None:
        plain, ax = panel_axes(("image", "heat"))
        show_image(plain, image, grid, IMAGE_TITLE)
    h, w = grid
    show_image(ax, image, grid, title)
    heat = ax.imshow(as_numpy(scores).reshape(h, w), extent=(0, w, h, 0), cmap=cmap, alpha=0.65,
                     interpolation="nearest", gid="score")
    bar = ax.figure.colorbar(heat, cax=ax.inset_axes((1.04, 0.0, 0.06, 1.0)))  # beside, the panel keeps its size
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


def outline_fate(ax, result: CompressionResult, grid: tuple[int, int], fate: Fate) -> None:
    """The patches of sample 0 whose fate is ``fate`` outlined in its colour (replacing earlier outlines)."""
    outline_patches(ax, as_numpy(result.fate[0]) == fate, grid, FATE_COLOURS[fate])


def draw_panel(panel: Panel, ax, image, grid: tuple[int, int], scores: dict, title: str | None = None) -> None:
    """What ``panel`` shows of an image and its scores (name -> [N]): the image, under its score map; title: in place
    of the panel's own."""
    title = panel.title if title is None else title
    if panel.scores is None:
        show_image(ax, image, grid, title or "")
    else:
        score_heatmap(image, scores[panel.scores], grid, title, ax=ax, cmap=panel.cmap)


def draw_result(panels, axes, result: CompressionResult, grid: tuple[int, int]) -> None:
    """What ``result`` (sample 0) changes on a row of panels, in place of what a result drew there before."""
    for panel, ax in zip(panels, axes):
        if panel.draw is not None:
            panel.draw(ax, result, grid)


@style()
def score_maps(image, grid: tuple[int, int], cls_attn, text_sim=None, result: CompressionResult | None = None,
               titles: tuple[str, ...] | None = None, axes=None, legend: bool = True) -> Figure:
    """The plain image and its two score maps side by side: [CLS] attention and text similarity ([N] each).

    text_sim: None (no text score) shows the image alone in the third panel.
    result: a result of this image (its sample 0 is drawn): the kept tokens are outlined on the first
    map, the recovered ones on the second, and its token-fate map (:func:`fate_map`) is a fourth panel.
    titles: one per panel after the plain image (default :data:`SCORE_TITLES`, then the fate map's own title).
    axes: the 3 (4 with a result) axes to draw into; default a new figure. legend: the fate legend, below.
    """
    names = ("image", "visual", "image" if text_sim is None else "text", "fates")[:3 if result is None else 4]
    panels = [PANELS[name] for name in names]
    if axes is None:
        axes = panel_axes(tuple(panel.kind for panel in panels), legend=legend and result is not None)
    if len(axes) != len(panels) or (titles is not None and len(titles) != len(panels) - 1):
        raise ValueError(f"score_maps draws {len(panels)} panels (titles for all but the image); got {len(axes)} "
                         f"axes and {'no' if titles is None else len(titles)} titles")
    titles = titles or SCORE_TITLES + ((None,) if result is not None else ())
    for panel, ax, title in zip(panels, axes, (IMAGE_TITLE, *titles)):
        draw_panel(panel, ax, image, grid, {"visual": cls_attn, "text": text_sim}, title)
    if result is not None:
        draw_result(panels, axes, result, grid)
        axes[3].set_title(fate_title(result) if titles[2] is None else titles[2], fontsize=10)
        if legend:
            result_legend(axes[3].figure, result)
    return axes[0].figure


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


def cluster_borders(assignment: np.ndarray, merged: np.ndarray, grid: tuple[int, int]) -> list:
    """Segments between neighbouring merged patches that belong to different output slots."""
    h, w = grid
    a, m = assignment.reshape(h, w), merged.reshape(h, w)
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


def fate_title(result: CompressionResult) -> str:
    """The default title of a token-fate map: "method: N -> K tokens"."""
    counts = result.counts(0)
    return f"{result.method}: {counts['n_input_tokens']} -> {counts['n_output_tokens']} tokens"


def draw_fates(ax, result: CompressionResult, grid: tuple[int, int], title: str | None = None,
               legend: bool = True) -> None:
    """The fate layers of :func:`fate_map` over an image already on ``ax``: patch colours, cluster borders, centre
    stars, legend and title. Layers drawn before on ``ax`` are replaced (an interactive view redraws only them)."""
    for old in [a for a in (*ax.images, *ax.collections) if a.get_gid() == "fates"]:
        old.remove()
    h, w = grid
    ax.imshow(patch_colours(result).reshape(h, w, 4), extent=(0, w, h, 0), interpolation="nearest", gid="fates")
    fate = as_numpy(result.fate[0]).astype(int)
    merged = (fate == Fate.MERGED) | (fate == Fate.CENTRE)
    segments = cluster_borders(as_numpy(result.assignment[0]).astype(int), merged, grid)
    ax.add_collection(LineCollection(segments, colors="white", linewidths=0.8, gid="fates"))
    centres = np.flatnonzero(fate == Fate.CENTRE)
    ax.scatter(centres % w + 0.5, centres // w + 0.5, marker="*", s=60, c="white", edgecolors="black",
               linewidths=0.5, zorder=3, gid="fates")
    if legend:
        result_legend(ax.figure, result)
    ax.set_title(fate_title(result) if title is None else title, fontsize=10)


PANELS: dict[str, Panel] = {  # the explorer's figure, from the left
    "image": Panel("image", IMAGE_TITLE, "the image"),
    "visual": Panel("heat", SCORE_TITLES[0], "[CLS] attention, the tokens the method kept unchanged outlined in blue",
                    partial(outline_fate, fate=Fate.KEPT), "visual"),
    "text": Panel("heat", SCORE_TITLES[1], "the question's text score, the recovered tokens outlined in orange",
                  partial(outline_fate, fate=Fate.RECOVERED), "text", "magma"),
    "fates": Panel("fates", None, "what the LLM reads of each patch", partial(draw_fates, legend=False)),
}



@style()
def fate_map(image, result: CompressionResult, grid: tuple[int, int], title: str | None = None, ax=None,
             legend: bool = True) -> Figure:
    """What became of every patch of sample 0: kept, recovered, merged (coloured by cluster), dropped.

    Merged tokens take the colour of the output slot that holds most of them (their cluster); tokens
    only in the extra token keep the plain "merged" colour; a star marks each merge centre and thin
    white lines separate neighbouring clusters. ax: the axes to draw into; default a new figure with the plain
    image on the left, the fate map on the right (and the legend below).
    """
    if ax is None:
        plain, ax = panel_axes(("image", "fates"), legend)
        show_image(plain, image, grid, IMAGE_TITLE)
    show_image(ax, image, grid)
    draw_fates(ax, result, grid, title, legend)
    return ax.figure


@style()
def token_sequence(result: CompressionResult, ax=None, per_row: int | None = None) -> Figure:
    """The K output tokens of sample 0 in the order the LLM reads them, coloured by slot kind."""
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
    counts = result.counts(0)
    ax.set_title(f"the LLM reads K = {K} visual tokens: {counts['n_visual']} kept + {counts['n_text']} recovered "
                 f"+ {counts['n_merged']} merged", fontsize=10)
    return ax.figure


@style()
def overview(image, result: CompressionResult, grid: tuple[int, int], question: str = "",
             answer: str | None = None) -> Figure:
    """The four stages of Recoverable Compression on sample 0 of a result, after the paper's Figure 1.

    1. visual score ([CLS] attention) -> kept tokens; 2. text score -> recovered tokens;
    3. the rest merged into clusters; 4. the token sequence the LLM reads. The scores are the ones the
    result records (``result.scores``: "visual", and "text" when the method used it).
    """
    counts = result.counts(0)
    text = result.scores.get("text")
    kinds = ("image", "heat", "image" if text is None else "heat", "fates")
    sequence = 0.3 * -(-len(result.slot[0]) // 48) + 0.5  # inches for the token sequence's rows and title
    figure = new_figure((sum(SLOT_WIDTHS[kind] for kind in kinds), PANEL + TITLE + 0.35 + sequence + LEGEND),
                        layout=None)  # top to bottom: the question, the maps, the token sequence, the fate legend
    titles = (f"1. visual score\n-> {counts['n_visual']} kept",
              "2. no text stage" if text is None else f"2. text score\n-> {counts['n_text']} recovered",
              f"3. the rest:\n{counts['n_merged']} merged tokens")
    score_maps(image, grid, result.scores["visual"][0], None if text is None else text[0], result, titles,
               axes=place_panels(figure, kinds, 0.1, LEGEND + sequence))
    width, height = figure.get_size_inches()
    token_sequence(result, ax=figure.add_axes((0.3 / width, LEGEND / height, 1 - 0.6 / width, (sequence - 0.4) / height)))
    answered = f"  ->  answer: {answer}" if answer is not None else ""
    figure.suptitle(f"Q: {question}{answered}" if question else result.method, fontsize=12)
    return figure


@style()
def filter_histogram(scores, decision, b: int = 0, title: str | None = None, xlabel: str = "score",
                     ax=None) -> Figure:
    """What the dynamic scale filter decided on row ``b`` of a score batch: histogram, outliers, cut.

    scores: that row's scores [n]; decision: the :class:`~rclib.filters.FilterDecision` of the batch
    (its statistic, threshold, outliers and count). Ticks mark the outliers; the dashed line is the
    lowest of the top-``count`` scores, where the stage cuts. IQR: the threshold is a score, drawn as
    a line. LOF: the statistic is each score's Local Outlier Factor, drawn as dots on a second axis
    with its threshold; LOF is two-sided, so low scores count too.
    """
    ax = new_axes(ax, (6, 3.4))
    values = as_numpy(scores)
    outliers = as_numpy(decision.outliers[b]).astype(bool)
    count = int(decision.count[b])
    threshold = float(decision.threshold[b])
    spread = values.min() > 0 and values.max() > 30 * values.min()  # heavy-tailed positive scores: a log axis
    bins = np.geomspace(values.min(), values.max(), 41) if spread else 40
    sns.histplot(values, bins=bins, ax=ax, color="#adb5bd", edgecolor="white")
    if spread:
        ax.set_xscale("log")  # attention crowds near zero on a linear axis, its cut and threshold on the y-axis
    handles = ax.plot(values[outliers], np.zeros(int(outliers.sum())), "|", color=FATE_COLOURS[Fate.RECOVERED],
                      markersize=18, markeredgewidth=1.5, label=f"outliers ({int(outliers.sum())})")
    if count > 0:
        cut = np.sort(values)[-count]  # where top-k by score stops
        handles.append(ax.axvline(cut, color=FATE_COLOURS[Fate.KEPT], linestyle="--",
                                  label=f"keeps the top {count} of {len(values)}"))
    if decision.rule == "iqr":  # the statistic is the score itself
        handles.append(ax.axvline(threshold, color="black", linewidth=0.8, label=f"threshold {threshold:.3g}"))
    else:
        lof_ax = ax.twinx()
        lof_ax.plot(values, as_numpy(decision.statistic[b]), ".", color="black", markersize=3, alpha=0.5)
        handles.append(lof_ax.axhline(threshold, color="black", linewidth=0.8,
                                      label=f"{decision.rule.upper()} > {threshold:g}: outlier"))
        lof_ax.set_yscale("log")  # ties give huge LOF values
        lof_ax.yaxis.set_major_formatter(mpl.ticker.LogFormatter())  # plain "1e+05": no mathtext, no STIX fonts
        lof_ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
        lof_ax.set_ylabel(f"{decision.rule.upper()} (dots)", fontsize=9)
    ax.set(xlabel=xlabel + (" (log scale)" if spread else ""), ylabel="tokens")
    ax.set_title(title or f"{decision.rule.upper()} filter", fontsize=10)
    ax.legend(handles=handles, fontsize=8, frameon=False)
    return ax.figure


@style()
def filter_thresholds(scores, decisions: dict, b: int = 0, xlabel: str = "score") -> Figure:
    """:func:`filter_histogram` of the same scores under several filter rules, side by side, each panel with its
    own axis labels (a LOF panel's second axis stays beside its own panel).

    decisions: panel title -> the :class:`~rclib.filters.FilterDecision` of a batch whose row ``b`` is
    ``scores``.
    """
    figure = new_figure((min(MAX_WIDTH, 5.2 * len(decisions)), 3.6))
    figure.get_layout_engine().set(wspace=0.08)
    axes = figure.subplots(1, len(decisions), squeeze=False)[0]
    for ax, (title, decision) in zip(axes, decisions.items()):
        filter_histogram(scores, decision, b, title, xlabel, ax=ax)
    return figure


def method_style(method: str, index: int) -> PlotStyle:
    """A method's curve style (``MethodSpec.style``), or the index-th other label's."""
    if method in METHODS:
        return METHODS[method].style
    return PlotStyle(f"C{index % 10}", OTHER_MARKERS[index % len(OTHER_MARKERS)], ("-", "--", "-.", ":")[index % 4])


def dodge(points: list[tuple[float, float]], x_step: float, y_close: float) -> list[float]:
    """Sideways offsets that keep markers apart: points within ``x_step`` / 2 and ``y_close`` of each other
    (in order of x, then y) form a group, spread ``x_step`` apart around their place; a lone point stays."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    offsets = [0.0] * len(points)
    group: list[int] = []
    for i in [*order, None]:
        if i is not None and group:
            (x, y), (x0, y0) = points[i], points[group[0]]
            if abs(x - x0) <= x_step / 2 and abs(y - y0) <= y_close:
                group.append(i)
                continue
        for j, member in enumerate(group):
            offsets[member] = (j - (len(group) - 1) / 2) * x_step
        group = [] if i is None else [i]
    return offsets


@style()
def accuracy_vs_tokens(rows: list[dict], metrics: tuple[str, ...] = ("accuracy",), title: str = "") -> Figure:
    """One panel per metric (three to a row): the metric against mean visual tokens, a line per method, every
    method visible.

    rows: bench rows (``rclib.bench.run_bench``) with method, budget, mean_tokens and the metrics.
    Each method has its own colour, marker and line style (``MethodSpec.style``), named in one legend right of
    the panels (nothing but data inside them); markers that would hide each other are spread sideways (the
    caption says by how many tokens). Adaptive budgets (the method chose K) are stars; the full model is a dashed
    horizontal line. The x-axis spans the compressed methods' tokens, not the full model's.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    columns = min(len(metrics), PANELS_PER_ROW)
    lines = -(-len(metrics) // columns)
    figure = new_figure((min(MAX_WIDTH, 3.1 * columns + 1.2), 3.0 * lines + 0.7))
    axes = figure.subplots(lines, columns, squeeze=False).flatten()
    for spare in axes[len(metrics):]:
        spare.remove()
    x_max = max((r["mean_tokens"] for r in rows if r["method"] != "full"), default=1.0)
    x_step = 0.012 * x_max  # the sideways spread between markers that would overlap
    named = {}  # label -> handle, for the one legend
    for ax, metric in zip(axes, metrics):
        shown = [r for r in rows if metric in r]
        curves = [r for r in shown if r["method"] != "full"]
        offsets = dodge([(r["mean_tokens"], r[metric]) for r in curves], x_step, 0.02)
        x_of = {id(r): r["mean_tokens"] + dx for r, dx in zip(curves, offsets)}
        for index, method in enumerate(methods):
            look = method_style(method, index)
            mine = sorted((r for r in shown if r["method"] == method), key=lambda r: r["mean_tokens"])
            if not mine:
                continue
            if method == "full":
                named[f"all {mine[0]['mean_tokens']:.0f} tokens"] = ax.axhline(
                    mine[0][metric], color=look.colour, linestyle=look.line, linewidth=1.2, zorder=1)
                if metric in mine[0].get("ci", {}):
                    ax.axhspan(*mine[0]["ci"][metric], color=look.colour, alpha=0.08, linewidth=0, zorder=0)
                continue
            fixed = [r for r in mine if r["budget"] != "adaptive"]
            adaptive = [r for r in mine if r["budget"] == "adaptive"]
            with_ci = [r for r in mine if metric in r.get("ci", {})]
            ax.errorbar([x_of[id(r)] for r in with_ci], [r[metric] for r in with_ci],
                        yerr=[[r[metric] - r["ci"][metric][0] for r in with_ci],
                              [r["ci"][metric][1] - r[metric] for r in with_ci]],
                        fmt="none", ecolor=look.colour, elinewidth=0.8, capsize=2, alpha=0.7, zorder=1)
            (curve,) = ax.plot([x_of[id(r)] for r in fixed], [r[metric] for r in fixed], color=look.colour,
                               marker=look.marker, linestyle=look.line, linewidth=look.width, markersize=6,
                               label=method, markerfacecolor="white" if index % 2 else look.colour, zorder=2)
            (stars,) = ax.plot([x_of[id(r)] for r in adaptive], [r[metric] for r in adaptive], "*", color=look.colour,
                               markersize=13, markeredgecolor="black", markeredgewidth=0.5, zorder=3,
                               label=f"{method} (adaptive)")
            named[method] = curve if fixed else stars
        ax.set(xlabel="visual tokens to the LLM (mean)", ylabel=metric.replace("_", " "), ylim=(-0.03, 1.03),
               xlim=(0, x_max * 1.08))
        ax.grid(alpha=0.3)
    star = Line2D([], [], marker="*", linestyle="none", markersize=11, markerfacecolor="white", markeredgecolor="black")
    caption = f"star: the method chose K itself (adaptive). Markers at equal values are spread {x_step:.0f} tokens apart"
    sizes = sorted({r["n"] for r in rows if "n" in r})
    if sizes:
        caption += f". n = {'/'.join(map(str, sizes))} questions; bars: 95% intervals"
    figure.legend([star], [caption], loc="outside lower center", fontsize=8, frameon=False)
    figure.legend(list(named.values()), list(named), loc="outside right upper", fontsize=8, frameon=False)
    if title:
        figure.suptitle(title)
    return figure


@style()
def method_grid(images: list, results: dict[str, CompressionResult], grid: tuple[int, int],
                row_titles: list[str] | None = None) -> Figure:
    """Token-fate maps of several methods on the same images: per image its row title (the question) above, the
    plain image, then a map per method, :data:`GRID_COLUMNS` panels to a line; the fate legend below all.

    results: method -> a result batched over ``images`` (sample b belongs to images[b]).
    """
    methods = list(results)
    slot = (MAX_WIDTH - 0.2) / GRID_COLUMNS  # inches per panel and its gap
    side = slot - 0.15  # a panel's side
    lines = -(-(len(methods) + 1) // GRID_COLUMNS)  # lines per image
    block = TITLE / 2 + lines * (side + TITLE / 2)  # inches per image: its title, then each line's titles and panels
    height = len(images) * block + LEGEND
    figure = new_figure((MAX_WIDTH, height), layout=None)
    for b, image in enumerate(images):
        top = height - b * block
        if row_titles:
            figure.text(0.1 / MAX_WIDTH, (top - 0.2) / height, textwrap.shorten(row_titles[b], 140), fontsize=10,
                        fontweight="bold", va="center")
        for i, method in enumerate([None, *methods]):
            line, column = divmod(i, GRID_COLUMNS)
            bottom = top - TITLE / 2 - line * (side + TITLE / 2) - TITLE / 2 - side
            ax = figure.add_axes(((0.1 + column * slot) / MAX_WIDTH, bottom / height, side / MAX_WIDTH, side / height))
            if method is None:
                show_image(ax, image, grid, IMAGE_TITLE)
            else:
                one = results[method][b]
                fate_map(image, one, grid, f"{method}: K = {int(one.n_output[0])}", ax=ax, legend=False)
    fate_legend(figure)
    return figure
