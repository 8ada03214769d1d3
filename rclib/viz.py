"""Figures from compression results: score maps, token-fate maps, the overview, the filter's cut, curves.

Every function draws what it is given (an image, a result, score vectors, a filter decision, bench
rows) and returns a matplotlib Figure; nothing here runs a model or computes a score. Drawing
functions take an optional ``ax`` (or ``axes``) so that bigger figures compose them; without one they
make their own figure.

Images are uint8 HWC arrays of exactly what the patch grid covers (``CompressedLlava.display_images``
gives them); the patch grid is drawn in patch units, so patch ``n`` of a ``(h, w)`` grid fills the
unit square at row ``n // w``, column ``n % w``. One colour code for the fates (:data:`FATE_COLOURS`)
is used by every figure, notebook and the CLI.

Style: each drawing function applies :func:`style` for itself; importing this module changes no
matplotlib setting. ``with viz.style(): ...`` gives your own figures the same look.
"""
from __future__ import annotations

import io
import textwrap

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from PIL import Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from rclib.result import CompressionResult, Fate, Slot

FATE_COLOURS: dict[Fate, str] = {
    Fate.KEPT: "#1c7ed6",  # blue: kept by the visual ([CLS] attention) filter or a peer's selection
    Fate.RECOVERED: "#f76707",  # orange: recovered by the text stage
    Fate.CENTRE: "#2b8a3e",  # dark green: a merge centre (its cluster colour fills the patch, a star marks it)
    Fate.MERGED: "#8ce99a",  # light green: merged (into the extra token when no cluster colour applies)
    Fate.DROPPED: "#343a40",  # dark grey: reaches the LLM in no form
}
FATE_LABELS: dict[Fate, str] = {
    Fate.KEPT: "kept (visual)",
    Fate.RECOVERED: "recovered (text)",
    Fate.CENTRE: "merge centre",
    Fate.MERGED: "merged into the extra token",
    Fate.DROPPED: "dropped",
}
# Output slots drawn in the fate colour of the tokens they hold; merged slots get their cluster colour.
SLOT_FATES: dict[Slot, Fate] = {Slot.KEPT: Fate.KEPT, Slot.RECOVERED: Fate.RECOVERED, Slot.CENTRE: Fate.CENTRE,
                                Slot.EXTRA: Fate.MERGED, Slot.POOLED: Fate.MERGED}
CLUSTER_SLOTS = (Slot.CENTRE, Slot.POOLED)  # slots that gather a cluster of tokens, one colour each
# tab20 without its blues, oranges, greens and greys: a cluster never reads as kept, recovered, extra or dropped
CLUSTER_PALETTE = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (0, 1, 2, 3, 4, 5, 14, 15)]
# method -> (colour, marker, line style): a method stays recognisable where its line meets another
METHOD_STYLES: dict[str, tuple[str, str, str]] = {
    "full": ("#495057", "", "--"), "rc": ("#e03131", "o", "-"), "prumerge": ("#1971c2", "s", "-"),
    "prumerge+": ("#4dabf7", "D", "--"), "fastervlm": ("#2f9e44", "^", "-"), "visionzip": ("#9c36b5", "v", "--"),
    "divprune": ("#f08c00", "P", "-."), "random": ("#868e96", "x", ":"), "pool": ("#795548", "h", ":"),
    "fastv": ("#0c8599", "<", "-."), "cdpruner": ("#d6336c", ">", "--"), "tome": ("#5c940d", "X", "-."),
    "oracle": ("#000000", "d", ":"),
}
OTHER_MARKERS = "o s ^ v D P X h < >".split()  # for labels outside METHOD_STYLES, with matplotlib's colour cycle
PANELS_PER_ROW = 3  # accuracy_vs_tokens wraps its panels
OVERLAY_ALPHA = 0.6  # opacity of patch colours over the image
SCORE_TITLES = ("visual score ([CLS] attention)", "text score (question vs patch)")
STYLE = {**sns.axes_style("white"), **sns.plotting_context("notebook")}  # rcParams of every figure here


def style():
    """rclib's figure style as a context manager (``with viz.style(): ...``) or a decorator (``@style()``);
    the user's matplotlib settings are restored on exit."""
    return mpl.rc_context(STYLE)


def close(figure: Figure) -> None:
    """Free a figure's memory once saved (figures here are never registered with pyplot)."""
    figure.clear()


def new_figure(size: tuple[float, float]) -> Figure:
    """A figure outside pyplot's registry: a notebook shows it once, as a cell's value, and it is
    freed like any object (no "too many open figures" in long sessions)."""
    figure = plt.figure(figsize=size, layout="constrained")
    plt.close(figure)
    return figure


def as_numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def new_axes(ax, size: tuple[float, float] = (4.2, 4.2)):
    """The given axes, or the single axes of a new figure."""
    if ax is not None:
        return ax
    return new_figure(size).add_subplot()


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
    """
    ax = new_axes(ax)
    h, w = grid
    show_image(ax, image, grid, title)
    heat = ax.imshow(as_numpy(scores).reshape(h, w), extent=(0, w, h, 0), cmap=cmap, alpha=0.65,
                     interpolation="nearest", gid="score")
    ax.figure.colorbar(heat, ax=ax, fraction=0.046, pad=0.02)
    if highlight is not None:
        outline_patches(ax, highlight, grid, highlight_colour)
    return ax.figure


@style()
def score_maps(image, grid: tuple[int, int], cls_attn, text_sim=None, result: CompressionResult | None = None,
               titles: tuple[str, ...] | None = None, axes=None, legend: bool = True) -> Figure:
    """The two score maps of one image side by side: [CLS] attention and text similarity ([N] each).

    text_sim: None (no text score) shows the image alone in the second panel.
    result: a result of this image (its sample 0 is drawn): the kept tokens are outlined on the first
    map, the recovered ones on the second, and its token-fate map (:func:`fate_map`) is a third panel.
    titles: one per panel (default :data:`SCORE_TITLES`, then the fate map's own title).
    axes: the 2 (3 with a result) axes to draw into; default a new figure. legend: the fate map's legend.
    """
    n_panels = 2 if result is None else 3
    if axes is None:
        axes = new_figure((5 * n_panels, 4.2)).subplots(1, n_panels)
    if len(axes) != n_panels or (titles is not None and len(titles) != n_panels):
        raise ValueError(f"score_maps draws {n_panels} panels; got {len(axes)} axes and "
                         f"{'no' if titles is None else len(titles)} titles")
    titles = titles or SCORE_TITLES + ((None,) if result is not None else ())
    score_heatmap(image, cls_attn, grid, titles[0], ax=axes[0], cmap="viridis")
    if text_sim is None:
        show_image(axes[1], image, grid, titles[1])
    else:
        score_heatmap(image, text_sim, grid, titles[1], ax=axes[1], cmap="magma")
    if result is not None:
        show_image(axes[2], image, grid)
        draw_result(axes, result, grid, titles[2], legend)
    return axes[0].figure


def draw_result(axes, result: CompressionResult, grid: tuple[int, int], title: str | None = None,
                legend: bool = True) -> None:
    """What a result changes on the three panels of :func:`score_maps`: the kept tokens outlined on the first,
    the recovered ones on the second, the fate layers on the third; what it drew there before is replaced."""
    fate = as_numpy(result.fate[0])
    outline_patches(axes[0], fate == Fate.KEPT, grid, FATE_COLOURS[Fate.KEPT])
    outline_patches(axes[1], fate == Fate.RECOVERED, grid, FATE_COLOURS[Fate.RECOVERED])
    draw_fates(axes[2], result, grid, title, legend)


class LiveScoreMaps:
    """:func:`score_maps` of one image and question, kept for an interactive view.

    Everything but the result (the image, both score maps, their colour bars, the layout) is rendered once
    and kept as a background; :meth:`show` replaces what a result draws (:func:`draw_result`) and draws only
    that over the background; :meth:`png` encodes the pixels. The fate legend is left out by default (an
    interactive view shows it once beside the figure).
    """

    def __init__(self, image, grid: tuple[int, int], cls_attn, text_sim, result: CompressionResult,
                 legend: bool = False, size: tuple[float, float] = (12.6, 3.6), dpi: int = 72):
        self.grid, self.legend = grid, legend
        with style():
            self.axes = new_figure(size).subplots(1, 3)
            score_maps(image, grid, cls_attn, text_sim, result, axes=self.axes, legend=legend)
        self.figure = self.axes[0].figure
        self.figure.set_dpi(dpi)
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

    def show_scores(self, image, cls_attn, text_sim, result: CompressionResult) -> None:
        """Another image or question on the same patch grid: the image and both score maps change in place (their
        colour bars follow), the layout stays, then ``result`` is drawn."""
        h, w = self.grid
        for ax in self.axes:
            next(a for a in ax.images if a.get_gid() == "image").set_data(image)
        for ax, scores in zip(self.axes[:2], (cls_attn, text_sim)):
            heat = next(a for a in ax.images if a.get_gid() == "score")
            heat.set_data(as_numpy(scores).reshape(h, w))
            heat.autoscale()
        self.render_background()
        self.show(result)

    def result_artists(self) -> list:
        """What a result draws: the outlines, the fate layers and legend, the fate map's title."""
        drawn = [a for ax in self.axes for a in (*ax.images, *ax.collections) if a.get_gid() in ("outline", "fates")]
        legend = self.axes[2].get_legend()
        return drawn + [self.axes[2].title] + ([legend] if legend else [])

    def show(self, result: CompressionResult, title: str | None = None) -> None:
        """Draw ``result`` (sample 0) in place of the previous one."""
        with style():
            draw_result(self.axes, result, self.grid, title, self.legend)
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


def fate_legend(ax, fates=tuple(Fate), clusters: bool = True) -> None:
    """Legend beside the axes: a swatch per fate, a star for centres, one entry for cluster colours."""
    handles = [Patch(facecolor=FATE_COLOURS[f], label=FATE_LABELS[f]) for f in fates if f != Fate.CENTRE]
    if clusters:
        handles.append(Patch(facecolor=CLUSTER_PALETTE[0], label="merged into a cluster (a colour each)"))
    if Fate.CENTRE in fates:
        handles.append(Line2D([], [], marker="*", linestyle="none", markersize=9, markerfacecolor="white",
                              markeredgecolor="black", label=FATE_LABELS[Fate.CENTRE]))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)


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
        fate_legend(ax, [f for f in Fate if (fate == f).any()], clusters=bool(cluster_colours(result)))
    ax.set_title(fate_title(result) if title is None else title, fontsize=10)


@style()
def fate_map(image, result: CompressionResult, grid: tuple[int, int], title: str | None = None, ax=None,
             legend: bool = True) -> Figure:
    """What became of every patch of sample 0: kept, recovered, merged (coloured by cluster), dropped.

    Merged tokens take the colour of the output slot that holds most of them (their cluster); tokens
    only in the extra token keep the plain "merged" colour; a star marks each merge centre and thin
    white lines separate neighbouring clusters.
    """
    ax = new_axes(ax, (5.4, 4.2) if legend else (4.2, 4.2))
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
    figure = new_figure((14, 5.4))
    top, bottom = figure.subfigures(2, 1, height_ratios=[4, 1])
    counts = result.counts(0)
    text = result.scores.get("text")
    titles = (f"1. visual score -> {counts['n_visual']} kept",
              "2. no text stage" if text is None else f"2. text score -> {counts['n_text']} recovered",
              f"3. the rest: {counts['n_merged']} merged tokens")
    score_maps(image, grid, result.scores["visual"][0], None if text is None else text[0], result, titles,
               axes=top.subplots(1, 3))
    token_sequence(result, ax=bottom.subplots())
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
    sns.histplot(values, bins=40, ax=ax, color="#adb5bd", edgecolor="white")
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
    ax.set(xlabel=xlabel, ylabel="tokens")
    ax.set_title(title or f"{decision.rule.upper()} filter", fontsize=10)
    ax.legend(handles=handles, fontsize=8, frameon=False)
    return ax.figure


@style()
def filter_thresholds(scores, decisions: dict, b: int = 0, xlabel: str = "score") -> Figure:
    """:func:`filter_histogram` of the same scores under several filter rules, side by side.

    decisions: panel title -> the :class:`~rclib.filters.FilterDecision` of a batch whose row ``b`` is
    ``scores``.
    """
    figure = new_figure((6 * len(decisions), 3.4))
    axes = figure.subplots(1, len(decisions), sharey=True, squeeze=False)[0]
    for ax, (title, decision) in zip(axes, decisions.items()):
        filter_histogram(scores, decision, b, title, xlabel, ax=ax)
    return figure


def method_style(method: str, index: int) -> tuple[str, str, str]:
    """(colour, marker, line style) of a method (:data:`METHOD_STYLES`), or of the index-th other label."""
    if method in METHOD_STYLES:
        return METHOD_STYLES[method]
    return f"C{index % 10}", OTHER_MARKERS[index % len(OTHER_MARKERS)], ("-", "--", "-.", ":")[index % 4]


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


def spread_labels(ys: list[float], gap: float, low: float, high: float) -> list[float]:
    """Label heights near ``ys``, at least ``gap`` apart and inside [low, high] when they fit, order kept: pushed
    up from ``low``, then down from ``high``."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    placed = list(ys)
    floor = low
    for i in order:
        placed[i] = max(placed[i], floor)
        floor = placed[i] + gap
    ceiling = high
    for i in reversed(order):
        placed[i] = min(placed[i], ceiling)
        ceiling = placed[i] - gap
    return placed


@style()
def accuracy_vs_tokens(rows: list[dict], metrics: tuple[str, ...] = ("accuracy",), title: str = "") -> Figure:
    """One panel per metric (three to a row): the metric against mean visual tokens, a line per method, every
    method visible.

    rows: bench rows (``rclib.bench.run_bench``) with method, budget, mean_tokens and the metrics.
    Each method has its own colour, marker and line style (:data:`METHOD_STYLES`) and its name at the right
    end of its line; markers that would hide each other are spread sideways (the caption says by how many
    tokens). Adaptive budgets (the method chose K) are stars; the full model is a dashed horizontal line.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    columns = min(len(metrics), PANELS_PER_ROW)
    lines = -(-len(metrics) // columns)
    figure = new_figure((5.0 * columns + 1.2, 3.8 * lines + 0.4))
    axes = figure.subplots(lines, columns, squeeze=False).flatten()
    for spare in axes[len(metrics):]:
        spare.remove()
    x_max = max(r["mean_tokens"] for r in rows)
    x_step = 0.012 * x_max  # the sideways spread between markers that would overlap
    for ax, metric in zip(axes, metrics):
        shown = [r for r in rows if metric in r]
        curves = [r for r in shown if r["method"] != "full"]
        offsets = dodge([(r["mean_tokens"], r[metric]) for r in curves], x_step, 0.02)
        x_of = {id(r): r["mean_tokens"] + dx for r, dx in zip(curves, offsets)}
        ends = {}  # method -> (x, y) of the point its name goes next to
        for index, method in enumerate(methods):
            colour, marker, line = method_style(method, index)
            mine = sorted((r for r in shown if r["method"] == method), key=lambda r: r["mean_tokens"])
            if not mine:
                continue
            if method == "full":
                ax.axhline(mine[0][metric], color=colour, linestyle=line, linewidth=1.2, zorder=1)
                if metric in mine[0].get("ci", {}):
                    ax.axhspan(*mine[0]["ci"][metric], color=colour, alpha=0.08, linewidth=0, zorder=0)
                ends[f"all {mine[0]['mean_tokens']:.0f} tokens"] = (x_max, mine[0][metric], colour)
                continue
            fixed = [r for r in mine if r["budget"] != "adaptive"]
            adaptive = [r for r in mine if r["budget"] == "adaptive"]
            with_ci = [r for r in mine if metric in r.get("ci", {})]
            ax.errorbar([x_of[id(r)] for r in with_ci], [r[metric] for r in with_ci],
                        yerr=[[r[metric] - r["ci"][metric][0] for r in with_ci],
                              [r["ci"][metric][1] - r[metric] for r in with_ci]],
                        fmt="none", ecolor=colour, elinewidth=0.8, capsize=2, alpha=0.7, zorder=1)
            ax.plot([x_of[id(r)] for r in fixed], [r[metric] for r in fixed], color=colour, marker=marker,
                    linestyle=line, linewidth=2.0 if method == "rc" else 1.3, markersize=6, label=method,
                    markerfacecolor="white" if index % 2 else colour, zorder=2)
            ax.plot([x_of[id(r)] for r in adaptive], [r[metric] for r in adaptive], "*", color=colour,
                    markersize=13, markeredgecolor="black", markeredgewidth=0.5, zorder=3,
                    label=None if fixed else method)
            last = (fixed or adaptive)[-1]
            ends[method] = (x_of[id(last)], last[metric], colour)
        heights = spread_labels([y for _, y, _ in ends.values()], 0.065, -0.02, 1.02)
        for (name, (x, y, colour)), height in zip(ends.items(), heights):
            ax.annotate(name, (x, y), xytext=(1.02, height), textcoords=("axes fraction", "data"), color=colour,
                        fontsize=8, va="center", annotation_clip=False,
                        arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.5, "alpha": 0.6})
        ax.set(xlabel="mean visual tokens reaching the LLM", ylabel=metric.replace("_", " "), ylim=(-0.03, 1.03),
               xlim=(0, x_max * 1.05))
        ax.grid(alpha=0.3)
    star = Line2D([], [], marker="*", linestyle="none", markersize=11, markerfacecolor="white", markeredgecolor="black")
    caption = f"star: the method chose K itself (adaptive). Markers at equal values are spread {x_step:.0f} tokens apart"
    sizes = sorted({r["n"] for r in rows if "n" in r})
    if sizes:
        caption += f". n = {'/'.join(map(str, sizes))} questions; bars: 95% intervals"
    figure.legend([star], [caption], loc="outside lower center", fontsize=8, frameon=False)
    if title:
        figure.suptitle(title)
    return figure


@style()
def method_grid(images: list, results: dict[str, CompressionResult], grid: tuple[int, int],
                row_titles: list[str] | None = None) -> Figure:
    """Token-fate maps of several methods (columns) on the same images (rows).

    results: method -> a result batched over ``images`` (sample b belongs to images[b]).
    """
    methods = list(results)
    figure = new_figure((2.4 * len(methods) + 2.4, 2.5 * len(images)))
    axes = figure.subplots(len(images), len(methods), squeeze=False)
    for b, image in enumerate(images):
        for j, method in enumerate(methods):
            one = results[method][b]
            fate_map(image, one, grid, f"{method}: K = {int(one.n_output[0])}", ax=axes[b, j], legend=False)
        if row_titles:
            axes[b, 0].set_ylabel(textwrap.fill(row_titles[b], 30), fontsize=8)
    fate_legend(axes[0, -1])
    return figure


