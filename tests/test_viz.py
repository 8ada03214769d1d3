"""rclib.viz draws what a result says: the fate colours, the score grid, the filter's cut, the curves."""
import importlib
from types import SimpleNamespace

import matplotlib as mpl
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from rclib import viz
from rclib.live import LiveFigure
from rclib.methods import METHODS
from rclib.result import Fate, Slot, from_weights

GRID = (2, 3)  # 6 patches
IMAGE = np.full((12, 18, 3), 128, dtype=np.uint8)


@pytest.fixture
def known_result():
    """Patch 0 kept, 1 recovered, 2 a centre absorbing 3, 4 dropped, 5 in the extra token."""
    weights = torch.zeros(1, 4, 6)
    weights[0, 0, 0] = weights[0, 1, 1] = weights[0, 2, 2] = 1.0
    weights[0, 2, 3] = 0.5
    weights[0, 3, 5] = 0.3
    slot = torch.tensor([[Slot.KEPT, Slot.RECOVERED, Slot.CENTRE, Slot.EXTRA]])
    fate = torch.tensor([[Fate.KEPT, Fate.RECOVERED, Fate.CENTRE, Fate.MERGED, Fate.DROPPED, Fate.MERGED]])
    scores = {"visual": torch.tensor([[0.5, 0.1, 0.2, 0.05, 0.1, 0.05]]),
              "text": torch.tensor([[0.1, 0.9, 0.2, 0.3, 0.1, 0.0]])}
    return from_weights(torch.randn(1, 6, 8), weights, slot, fate, "rc", scores)


def rgb(colour) -> np.ndarray:
    return np.array(to_rgba(colour)[:3])


def test_every_fate_has_one_colour_and_label():
    assert set(viz.FATE_COLOURS) == set(Fate) == set(viz.FATE_LABELS)
    assert len(set(viz.FATE_COLOURS.values())) == len(Fate)


def test_patch_colours_follow_fates_and_clusters(known_result):
    colours = viz.patch_colours(known_result)[:, :3]
    assert np.allclose(colours[0], rgb(viz.FATE_COLOURS[Fate.KEPT]))
    assert np.allclose(colours[1], rgb(viz.FATE_COLOURS[Fate.RECOVERED]))
    assert np.allclose(colours[2], rgb(viz.CLUSTER_PALETTE[0]))  # the centre and the token it absorbed
    assert np.allclose(colours[3], rgb(viz.CLUSTER_PALETTE[0]))  # share one cluster colour
    assert np.allclose(colours[4], rgb(viz.FATE_COLOURS[Fate.DROPPED]))
    assert np.allclose(colours[5], rgb(viz.FATE_COLOURS[Fate.MERGED]))  # only in the extra token


def test_fate_map_overlays_the_patch_colours_and_marks_centres(known_result):
    figure = viz.fate_map(IMAGE, known_result, GRID)
    assert isinstance(figure, Figure)
    plain, ax = figure.axes
    assert plain.get_title() == viz.IMAGE_TITLE and len(plain.get_images()) == 1, "the plain image beside the map"
    overlay = ax.get_images()[1].get_array()  # [h, w, 4] over the image
    assert overlay.shape == (2, 3, 4)
    assert np.allclose(overlay.reshape(6, 4), viz.patch_colours(known_result))
    centres = ax.collections[-1].get_offsets()
    assert np.allclose(centres, [[2.5, 0.5]]), "one star at the centre patch (row 0, column 2)"
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert METHODS["rc"].kept_label in legend and viz.FATE_LABELS[Fate.DROPPED] in legend, "kept: as rc picks them"
    assert ax.get_title() == "rc: 6 -> 4 tokens"


def outlined(ax) -> list[tuple[float, float]]:
    """The (x, y) top-left corners of the patch outlines on an axes."""
    squares = [c for c in ax.collections if c.get_gid() == "outline"]
    assert len(squares) <= 1, "outlines drawn again replace the old ones"
    return [tuple(path.vertices[0]) for c in squares for path in c.get_paths()]


def test_score_heatmap_puts_scores_on_the_patch_grid(known_result):
    scores = known_result.scores["visual"][0]
    figure = viz.score_heatmap(IMAGE, scores, GRID, "visual", highlight=known_result.fate[0] == Fate.KEPT)
    plain, ax = figure.axes
    assert plain.get_title() == viz.IMAGE_TITLE and len(plain.get_images()) == 1, "the plain image beside the map"
    heat = ax.get_images()[1]
    assert np.allclose(heat.get_array(), scores.numpy().reshape(GRID))
    assert outlined(ax) == [(0, 0)], "the kept patch 0 is outlined"
    assert len(ax.child_axes) == 1, "the heatmap has a colour bar"


def test_token_sequence_colours_each_output_slot(known_result):
    figure = viz.token_sequence(known_result)
    cells = [p.get_facecolor()[:3] for p in figure.axes[0].patches]
    expected = [viz.FATE_COLOURS[Fate.KEPT], viz.FATE_COLOURS[Fate.RECOVERED], viz.CLUSTER_PALETTE[0],
                viz.FATE_COLOURS[Fate.MERGED]]
    assert np.allclose(cells, [rgb(c) for c in expected])
    assert "K = 4" in figure.axes[0].get_title()


def test_overview_shows_the_four_stages(known_result):
    figure = viz.overview(IMAGE, known_result, GRID, "what colour?", "red")
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0] == viz.IMAGE_TITLE
    assert any(t.startswith("1. visual score\n-> 1 kept") for t in titles)
    assert any(t.startswith("2. text score\n-> 1 recovered") for t in titles)
    assert any(t.startswith("3.") for t in titles) and any("K = 4" in t for t in titles)
    assert "answer: red" in figure._suptitle.get_text()


def test_score_maps_draw_both_scores_with_the_fates(known_result):
    visual, text = known_result.scores["visual"][0], known_result.scores["text"][0]
    figure = viz.score_maps(IMAGE, GRID, visual, text, known_result)
    plain, *maps = figure.axes  # the panels (colour bars are their child axes)
    assert [ax.get_title() for ax in figure.axes] == [viz.IMAGE_TITLE, *viz.SCORE_TITLES, "rc: 6 -> 4 tokens"]
    assert np.allclose(maps[0].get_images()[1].get_array(), visual.numpy().reshape(GRID))
    assert np.allclose(maps[1].get_images()[1].get_array(), text.numpy().reshape(GRID))
    assert outlined(maps[0]) == [(0, 0)] and outlined(maps[1]) == [(1, 0)], "kept patch 0, recovered patch 1"
    assert np.allclose(maps[2].get_images()[1].get_array().reshape(6, 4), viz.patch_colours(known_result))


def test_score_maps_without_a_result_or_a_text_score(known_result):
    figure = viz.score_maps(IMAGE, GRID, known_result.scores["visual"][0], titles=("visual", "no text"))
    plain, *maps = figure.axes
    assert [ax.get_title() for ax in figure.axes] == [viz.IMAGE_TITLE, "visual", "no text"]
    assert outlined(maps[0]) == [] and len(maps[1].get_images()) == 1, "the third panel is the image alone"
    with pytest.raises(ValueError, match="4 panels"):
        viz.score_maps(IMAGE, GRID, known_result.scores["visual"][0], result=known_result, titles=("a", "b"))


SPIKED = torch.cat([torch.linspace(0, 1, 60), torch.tensor([3.0, 3.5, 4.0])])  # 63 scores, three high


def test_filter_histogram_draws_an_iqr_decision():
    decision = SimpleNamespace(rule="iqr", statistic=SPIKED[None], threshold=torch.tensor([2.0]),
                               outliers=(SPIKED > 2.0)[None], count=torch.tensor([3]))
    ax = viz.filter_histogram(SPIKED, decision, xlabel="visual score").axes[0]
    ticks, cut, threshold = ax.lines
    assert list(ticks.get_xdata()) == [3.0, 3.5, 4.0]
    assert cut.get_linestyle() == "--" and cut.get_xdata()[0] == 3.0, "the lowest of the top 3"
    assert threshold.get_xdata()[0] == 2.0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["outliers (3)", "keeps the top 3 of 63",
                                                                    "threshold 2"]
    assert ax.get_title() == "IQR filter" and ax.get_xlabel() == "visual score"


def test_filter_histogram_draws_the_lof_values_of_a_decision():
    lof = torch.ones(63, dtype=torch.float64)
    lof[[0, 61, 62]] = torch.tensor([1.6, 2.0, 3.0], dtype=torch.float64)  # one low and two high outliers
    decision = SimpleNamespace(rule="lof", statistic=lof[None], threshold=torch.tensor([1.5]),
                               outliers=(lof > 1.5)[None], count=torch.tensor([3]))
    figure = viz.filter_histogram(SPIKED, decision, title="LOF (20 neighbours)")
    ax, lof_ax = figure.axes
    assert list(ax.lines[0].get_xdata()) == [0.0, 3.5, 4.0], "LOF is two-sided: the low score counts"
    assert ax.lines[1].get_xdata()[0] == 3.0, "the stage still keeps the top 3 scores"
    dots, threshold = lof_ax.lines
    assert np.allclose(dots.get_ydata(), lof.numpy()) and threshold.get_ydata()[0] == 1.5
    assert ax.get_title() == "LOF (20 neighbours)"


def test_filter_thresholds_puts_decisions_side_by_side():
    decision = SimpleNamespace(rule="iqr", statistic=SPIKED[None], threshold=torch.tensor([2.0]),
                               outliers=(SPIKED > 2.0)[None], count=torch.tensor([3]))
    figure = viz.filter_thresholds(SPIKED, {"IQR": decision, "IQR again": decision})
    assert [ax.get_title() for ax in figure.axes] == ["IQR", "IQR again"]


def test_importing_viz_leaves_matplotlib_settings_alone():
    before = dict(mpl.rcParams)
    importlib.reload(viz)
    assert dict(mpl.rcParams) == before


def test_figures_are_styled_without_changing_the_settings(known_result):
    assert mpl.rcParams["axes.edgecolor"] != viz.STYLE["axes.edgecolor"], "a default that the style changes"
    before = dict(mpl.rcParams)
    ax = viz.token_sequence(known_result).axes[0]
    assert dict(mpl.rcParams) == before
    assert to_rgba(ax.spines["top"].get_edgecolor()) == to_rgba(viz.STYLE["axes.edgecolor"])
    with viz.style():
        assert mpl.rcParams["axes.edgecolor"] == viz.STYLE["axes.edgecolor"]


def test_accuracy_vs_tokens_draws_a_line_per_method():
    rows = [{"method": "full", "budget": "all", "mean_tokens": 144, "accuracy": 0.9},
            {"method": "rc", "budget": "adaptive", "mean_tokens": 20, "accuracy": 0.8},
            {"method": "rc", "budget": "16", "mean_tokens": 16, "accuracy": 0.7},
            {"method": "rc", "budget": "32", "mean_tokens": 32, "accuracy": 0.8},
            {"method": "fastervlm", "budget": "16", "mean_tokens": 16, "accuracy": 0.5}]
    ax = viz.accuracy_vs_tokens(rows).axes[0]
    by_label = {line.get_label(): line for line in ax.lines}
    assert list(by_label["rc"].get_xdata()) == [16, 32]
    style = METHODS["rc"].style
    assert to_rgba(by_label["rc"].get_color()) == to_rgba(style.colour) and by_label["rc"].get_marker() == style.marker
    assert by_label["rc"].get_linewidth() == style.width
    assert by_label["fastervlm"].get_marker() != style.marker, "methods differ by marker, not only by colour"
    assert list(by_label["fastervlm"].get_ydata()) == [0.5]
    full = [line for line in ax.lines if line.get_linestyle() == "--" and len(set(line.get_ydata())) == 1]
    assert full[0].get_ydata()[0] == 0.9
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    assert [list(s.get_xdata()) for s in stars if len(s.get_xdata())] == [[20]]
    names = {t.get_text() for legend in ax.figure.legends for t in legend.get_texts()}
    assert {"rc", "fastervlm", "all 144 tokens"} <= names, "every line is named in the legend"


def test_tied_points_are_spread_so_that_every_method_shows():
    rows = [{"method": m, "budget": "64", "mean_tokens": 64, "accuracy": 1.0} for m in ("rc", "divprune", "oracle")]
    rows.append({"method": "random", "budget": "64", "mean_tokens": 64, "accuracy": 0.2})
    ax = viz.accuracy_vs_tokens(rows).axes[0]
    x = {line.get_label(): line.get_xdata()[0] for line in ax.lines if line.get_label() in ("rc", "divprune", "oracle",
                                                                                             "random")}
    step = 0.012 * 64
    assert sorted(x[m] for m in ("rc", "divprune", "oracle")) == pytest.approx([64 - step, 64, 64 + step])
    assert x["random"] == 64, "a point that hides nothing stays in place"


def test_dodge():
    assert viz.dodge([(10, 1.0), (10, 1.0), (50, 0.5)], 2, 0.02) == [-1.0, 1.0, 0.0]


def test_live_score_maps_redraw_only_the_result(known_result):
    visual, text = known_result.scores["visual"][0], known_result.scores["text"][0]
    live = LiveFigure(IMAGE, GRID, {"visual": visual, "text": text}, known_result)
    first = live.jpeg()
    assert first[:3] == b"\xff\xd8\xff", "a JPEG"
    assert outlined(live.axes[1]) == [(0, 0)] and outlined(live.axes[2]) == [(1, 0)]
    weights = torch.zeros(1, 1, 6)
    weights[0, 0, 4] = 1.0
    other = from_weights(torch.randn(1, 6, 8), weights, torch.tensor([[Slot.KEPT]]),
                         torch.tensor([[Fate.DROPPED] * 4 + [Fate.KEPT, Fate.DROPPED]]), "fastervlm")
    live.show(other)
    assert outlined(live.axes[1]) == [(1, 1)] and outlined(live.axes[2]) == [], "patch 4 kept, nothing recovered"
    assert live.axes[3].get_title() == "fastervlm: 6 -> 1 tokens"
    assert len([i for i in live.axes[3].get_images() if i.get_gid() == "fates"]) == 1, "the old layer is gone"
    assert live.jpeg() != first
    live.show(known_result)
    assert live.jpeg() == first, "the same result draws the same pixels"


def test_method_grid_has_a_map_per_image_and_method(known_result):
    methods = {f"m{i}": known_result for i in range(viz.GRID_COLUMNS + 1)}  # the image and these: two lines
    figure = viz.method_grid([IMAGE], methods, GRID, ["image a: what colour?"])
    assert len(figure.axes) == len(methods) + 1
    assert [t.get_text() for t in figure.texts] == ["image a: what colour?"], "the question with its row"
    assert [ax.get_title() for ax in figure.axes[:2]] == [viz.IMAGE_TITLE, "m0: K = 4"]
    lines = {round(ax.get_position().y0, 3) for ax in figure.axes}
    assert len(lines) == 2, "an image's panels wrap to a second line"
    assert figure.get_figwidth() <= viz.MAX_WIDTH


def test_live_score_maps_take_new_scores_in_place(known_result):
    visual, text = known_result.scores["visual"][0], known_result.scores["text"][0]
    live = LiveFigure(IMAGE, GRID, {"visual": visual, "text": text}, known_result)
    before = live.jpeg()
    live.show_scores(255 - IMAGE, {"visual": text, "text": visual}, known_result)
    for ax, scores in zip(live.axes[1:3], (text, visual)):
        image, heat = ax.get_images()[:2]
        assert np.array_equal(image.get_array(), 255 - IMAGE)
        assert np.allclose(heat.get_array(), scores.numpy().reshape(GRID))
        assert heat.get_clim() == pytest.approx((float(scores.min()), float(scores.max()))), "the colour bar follows"
    assert np.array_equal(live.axes[3].get_images()[0].get_array(), 255 - IMAGE)
    assert live.jpeg() != before


def test_a_new_question_redraws_only_the_text_score_as_a_new_figure_draws_it(known_result, monkeypatch):
    visual, text = known_result.scores["visual"][0], known_result.scores["text"][0]
    live = LiveFigure(IMAGE, GRID, {"visual": visual, "text": text}, known_result)
    monkeypatch.setattr(live.figure.canvas, "draw", lambda: pytest.fail("the whole figure was drawn again"))
    drawn = []
    draw_artist = live.figure.draw_artist
    monkeypatch.setattr(live.figure, "draw_artist", lambda artist: drawn.append(artist) or draw_artist(artist))
    asked = {"visual": visual, "text": 1 - 2 * text}  # another question: another text score, the same image
    live.show_scores(IMAGE, asked, known_result)
    assert live.axes[2] in drawn and not {live.axes[0], live.axes[1], live.axes[3]} & set(drawn)
    monkeypatch.undo()
    fresh = LiveFigure(IMAGE, GRID, asked, known_result)
    assert np.array_equal(np.asarray(live.figure.canvas.buffer_rgba()), np.asarray(fresh.figure.canvas.buffer_rgba()))


# Colour-vision simulation (Machado, Oliveira & Fernandes 2009, severity 1), on linear RGB.
CVD = {"normal": np.eye(3),
       "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                               [-0.003882, -0.048116, 1.051998]]),
       "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                                 [-0.011820, 0.042940, 0.968881]]),
       "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                               [0.004733, 0.691367, 0.303900]])}


def lab_seen(colour, vision: str) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour as a reader with ``vision`` sees it."""
    srgb = np.array(to_rgba(colour)[:3])
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    linear = np.clip(CVD[vision] @ linear, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


@pytest.mark.parametrize("vision", list(CVD))
def test_fates_and_clusters_are_told_apart_in_every_vision(vision):
    fates = [c for fate, c in viz.FATE_COLOURS.items() if fate != Fate.CENTRE]  # a centre wears its cluster's colour
    for a, b in [(a, b) for i, a in enumerate(fates) for b in fates[i + 1:]]:
        assert np.linalg.norm(lab_seen(a, vision) - lab_seen(b, vision)) >= viz.CVD_DISTANCE, (vision, a, b)
    for cluster in viz.CLUSTER_PALETTE:
        for fate in fates:
            distance = np.linalg.norm(lab_seen(cluster, vision) - lab_seen(fate, vision))
            assert distance >= viz.CVD_DISTANCE, f"cluster {cluster} reads as fate {fate} under {vision}: {distance:.0f}"
    assert lab_seen("#ff0000", "deuteranopia")[1] < 0.5 * lab_seen("#ff0000", "normal")[1], "the simulation works"


def render(figure):
    """Draw a figure on an Agg canvas (layout, aspect and text positions applied); returns it."""
    FigureCanvasAgg(figure).draw()
    return figure


def drawn_widths(figure) -> list[float]:
    """The drawn width in inches of each image panel of a figure (aspect applied)."""
    render(figure)
    return [ax.get_window_extent().width / figure.dpi for ax in figure.axes if ax.get_images()]


def test_every_map_panel_has_the_same_size_in_every_figure(known_result):
    visual, text = known_result.scores["visual"][0], known_result.scores["text"][0]
    figures = [viz.score_maps(IMAGE, GRID, visual, text), viz.score_maps(IMAGE, GRID, visual, text, known_result),
               viz.score_heatmap(IMAGE, visual, GRID), viz.fate_map(IMAGE, known_result, GRID),
               viz.overview(IMAGE, known_result, GRID, "q?", "a")]
    widths = [w for figure in figures for w in drawn_widths(figure)]
    assert max(widths) - min(widths) < 0.02 * viz.PANEL, "no map narrower than its siblings"
    assert all(figure.get_figwidth() <= viz.MAX_WIDTH + 1e-9 for figure in figures), "shown unscaled in a notebook"


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_accuracy_labels_stay_outside_the_data_and_the_points_fill_the_x_axis():
    rows = [{"method": "full", "budget": "all", "mean_tokens": 576, "accuracy": 0.9}]
    rows += [{"method": m, "budget": str(k), "mean_tokens": k, "accuracy": a} for m, a in (("rc", 0.8), ("pool", 0.2))
             for k in (64, 128, 192)]
    figure = render(viz.accuracy_vs_tokens(rows, ("accuracy", "accuracy")))
    panels = [ax.get_window_extent() for ax in figure.axes]
    for ax in figure.axes:
        assert not ax.texts and not ax.get_legend(), "no text drawn on the data"
        low, high = ax.get_xlim()
        assert (192 - 64) / (high - low) > 0.6, f"the points use {192 - 64} of a {high - low:.0f}-token axis"
        assert all(len(line.get_xdata()) == 0 or max(line.get_xdata()) <= 192.5 or line.get_linestyle() == "--"
                   for line in ax.lines), "no line runs past the last point but the full model's"
    for legend in figure.legends:
        assert not any(overlaps(legend.get_window_extent(), panel) for panel in panels)


def test_heavy_tailed_scores_get_a_log_axis_and_the_lof_axis_stays_with_its_panel():
    scores = torch.cat([torch.full((500,), 1e-4), torch.logspace(-4, -1, 76)])  # [576]: most near zero, a tail
    lof = torch.ones(576, dtype=torch.float64)
    lof[-5:] = 3.0
    count = torch.tensor([5])
    decisions = {"LOF": SimpleNamespace(rule="lof", statistic=lof[None], threshold=torch.tensor([1.5]),
                                        outliers=(lof > 1.5)[None], count=count),
                 "IQR": SimpleNamespace(rule="iqr", statistic=scores[None], threshold=torch.tensor([0.02]),
                                        outliers=(scores > 0.02)[None], count=count)}
    figure = render(viz.filter_thresholds(scores, decisions))
    lof_ax, iqr_ax, lof_values = figure.axes
    for ax in (lof_ax, iqr_ax):
        assert ax.get_xscale() == "log" and ax.get_ylabel() == "tokens"
        cut = next(line for line in ax.lines if line.get_linestyle() == "--").get_xdata()[0]
        share = ax.transAxes.inverted().transform(ax.transData.transform((cut, 0)))[0]
        assert 0.05 < share < 0.98, "the cut is drawn inside the panel, away from the y-axis"
    label = lof_values.yaxis.label.get_window_extent()
    assert label.x1 < iqr_ax.yaxis.label.get_window_extent().x0, "the LOF axis label sits within its own panel"


def test_every_method_has_a_curve_style_of_its_own():
    looks = [(spec.style.colour, spec.style.marker, spec.style.line) for spec in METHODS.values()]
    assert len(set(looks)) == len(looks), "two methods would draw the same curve"
    assert len({spec.style.colour for spec in METHODS.values()}) == len(METHODS), "a colour each"
    assert all("*" not in spec.style.marker for spec in METHODS.values()), "the star marks adaptive budgets"


def test_the_live_figure_is_a_row_of_the_registered_panels(known_result):
    scores = {"visual": known_result.scores["visual"][0], "text": known_result.scores["text"][0]}
    live = LiveFigure(IMAGE, GRID, scores, known_result)
    assert len(live.axes) == len(viz.PANELS)
    assert [ax.get_title() for ax in live.axes] == [p.title or viz.fate_title(known_result) for p in viz.PANELS.values()]
    one = LiveFigure(IMAGE, GRID, scores, known_result, panels=(viz.PANELS["visual"],))
    assert len(one.axes) == 1 and outlined(one.axes[0]) == [(0, 0)], "a panel is one entry: it draws alone"
