"""Figures without an image: the dynamic scale filter's cut on a score histogram, and accuracy against visual tokens.

Every function draws what it is given (score vectors, a filter decision, bench rows) and returns a matplotlib Figure;
nothing here runs a model or computes a score. A method's curve style comes from its
:class:`~rclib.methods.MethodSpec`. Each drawing function applies :func:`rclib.plotting.style` for itself. Callers reach
these as ``viz.<name>`` (:mod:`rclib.viz` is the figure API's namespace).
"""
from __future__ import annotations

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rclib.methods import METHODS
from rclib.methods.registry import PlotStyle
from rclib.plotting import (
    FATE_COLOURS,
    MAX_WIDTH,
    as_numpy,
    new_axes,
    new_figure,
    style,
)
from rclib.result import Fate

OTHER_MARKERS = "o s ^ v D P X h < >".split()  # for labels that name no method, with matplotlib's colour cycle
PANELS_PER_ROW = 3  # accuracy_vs_tokens wraps its panels


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
