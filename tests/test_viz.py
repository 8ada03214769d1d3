"""rclib.viz draws what a result says: the fate colours, the score grid, the filter's cut, the curves."""
import importlib
from types import SimpleNamespace

import matplotlib as mpl
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from rclib import viz
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
    ax = figure.axes[0]
    overlay = ax.get_images()[1].get_array()  # [h, w, 4] over the image
    assert overlay.shape == (2, 3, 4)
    assert np.allclose(overlay.reshape(6, 4), viz.patch_colours(known_result))
    centres = ax.collections[-1].get_offsets()
    assert np.allclose(centres, [[2.5, 0.5]]), "one star at the centre patch (row 0, column 2)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert viz.FATE_LABELS[Fate.KEPT] in legend and viz.FATE_LABELS[Fate.DROPPED] in legend
    assert ax.get_title() == "rc: 6 -> 4 tokens"


def outlined(ax) -> list[tuple[float, float]]:
    """The (x, y) top-left corners of the patch outlines on an axes."""
    squares = [c for c in ax.collections if c.get_gid() == "outline"]
    assert len(squares) <= 1, "outlines drawn again replace the old ones"
    return [tuple(path.vertices[0]) for c in squares for path in c.get_paths()]


def test_score_heatmap_puts_scores_on_the_patch_grid(known_result):
    scores = known_result.scores["visual"][0]
    figure = viz.score_heatmap(IMAGE, scores, GRID, "visual", highlight=known_result.fate[0] == Fate.KEPT)
    heat = figure.axes[0].get_images()[1]
    assert np.allclose(heat.get_array(), scores.numpy().reshape(GRID))
    assert outlined(figure.axes[0]) == [(0, 0)], "the kept patch 0 is outlined"
    assert len(figure.axes) == 2, "the heatmap has a colour bar"


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
    assert any(t.startswith("1. visual score -> 1 kept") for t in titles)
    assert any(t.startswith("2. text score -> 1 recovered") for t in titles)
    assert any(t.startswith("3.") for t in titles) and any("K = 4" in t for t in titles)
    assert "answer: red" in figure._suptitle.get_text()


def test_score_maps_draw_both_scores_with_the_fates(known_result):
    visual, text = known_result.scores["visual"][0], known_result.scores["text"][0]
    figure = viz.score_maps(IMAGE, GRID, visual, text, known_result)
    maps = [ax for ax in figure.axes if ax.get_title()]  # the panels (colour bars have no title)
    assert [ax.get_title() for ax in maps] == [*viz.SCORE_TITLES, "rc: 6 -> 4 tokens"]
    assert np.allclose(maps[0].get_images()[1].get_array(), visual.numpy().reshape(GRID))
    assert np.allclose(maps[1].get_images()[1].get_array(), text.numpy().reshape(GRID))
    assert outlined(maps[0]) == [(0, 0)] and outlined(maps[1]) == [(1, 0)], "kept patch 0, recovered patch 1"
    assert np.allclose(maps[2].get_images()[1].get_array().reshape(6, 4), viz.patch_colours(known_result))


def test_score_maps_without_a_result_or_a_text_score(known_result):
    figure = viz.score_maps(IMAGE, GRID, known_result.scores["visual"][0], titles=("visual", "no text"))
    maps = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in maps] == ["visual", "no text"]
    assert outlined(maps[0]) == [] and len(maps[1].get_images()) == 1, "the second panel is the image alone"
    with pytest.raises(ValueError, match="3 panels"):
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
    colour, marker, style = viz.METHOD_STYLES["rc"]
    assert to_rgba(by_label["rc"].get_color()) == to_rgba(colour) and by_label["rc"].get_marker() == marker
    assert by_label["fastervlm"].get_marker() != marker, "methods differ by marker, not only by colour"
    assert list(by_label["fastervlm"].get_ydata()) == [0.5]
    full = [line for line in ax.lines if line.get_linestyle() == "--" and len(set(line.get_ydata())) == 1]
    assert full[0].get_ydata()[0] == 0.9
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    assert [list(s.get_xdata()) for s in stars if len(s.get_xdata())] == [[20]]
    names = {t.get_text() for t in ax.texts}
    assert names == {"rc", "fastervlm", "all 144 tokens"}, "every line is named at its end"


def test_tied_points_are_spread_so_that_every_method_shows():
    rows = [{"method": m, "budget": "64", "mean_tokens": 64, "accuracy": 1.0} for m in ("rc", "divprune", "oracle")]
    rows.append({"method": "random", "budget": "64", "mean_tokens": 64, "accuracy": 0.2})
    ax = viz.accuracy_vs_tokens(rows).axes[0]
    x = {line.get_label(): line.get_xdata()[0] for line in ax.lines if line.get_label() in ("rc", "divprune", "oracle",
                                                                                             "random")}
    step = 0.012 * 64
    assert sorted(x[m] for m in ("rc", "divprune", "oracle")) == pytest.approx([64 - step, 64, 64 + step])
    assert x["random"] == 64, "a point that hides nothing stays in place"


def test_dodge_and_spread_labels():
    assert viz.dodge([(10, 1.0), (10, 1.0), (50, 0.5)], 2, 0.02) == [-1.0, 1.0, 0.0]
    assert viz.spread_labels([0.5, 0.5, 0.9], 0.1, 0.0, 1.0) == pytest.approx([0.5, 0.6, 0.9])
    assert viz.spread_labels([1.0, 1.0], 0.1, 0.0, 1.0) == pytest.approx([0.9, 1.0]), "kept under the top"


def test_live_score_maps_redraw_only_the_result(known_result):
    visual, text = known_result.scores["visual"][0], known_result.scores["text"][0]
    live = viz.LiveScoreMaps(IMAGE, GRID, visual, text, known_result)
    first = live.png()
    assert first[:4] == b"\x89PNG"
    assert outlined(live.axes[0]) == [(0, 0)] and outlined(live.axes[1]) == [(1, 0)]
    weights = torch.zeros(1, 1, 6)
    weights[0, 0, 4] = 1.0
    other = from_weights(torch.randn(1, 6, 8), weights, torch.tensor([[Slot.KEPT]]),
                         torch.tensor([[Fate.DROPPED] * 4 + [Fate.KEPT, Fate.DROPPED]]), "fastervlm")
    live.show(other)
    assert outlined(live.axes[0]) == [(1, 1)] and outlined(live.axes[1]) == [], "patch 4 kept, nothing recovered"
    assert live.axes[2].get_title() == "fastervlm: 6 -> 1 tokens"
    assert len([i for i in live.axes[2].get_images() if i.get_gid() == "fates"]) == 1, "the old layer is gone"
    assert live.png() != first
    live.show(known_result)
    assert live.png() == first, "the same result draws the same pixels"


def test_method_grid_has_a_map_per_image_and_method(known_result):
    figure = viz.method_grid([IMAGE], {"rc": known_result, "again": known_result}, GRID, ["image a"])
    assert len(figure.axes) == 2
    assert figure.axes[0].get_ylabel() == "image a"
    assert figure.axes[0].get_title() == "rc: K = 4"


def test_many_labels_near_the_top_stay_inside_the_panel():
    placed = viz.spread_labels([0.0] + [1.0] * 12, 0.065, -0.02, 1.02)
    assert min(placed) >= -0.02 and max(placed) <= 1.02 + 1e-9
    assert all(b - a >= 0.065 - 1e-9 for a, b in zip(sorted(placed), sorted(placed)[1:]))
    assert placed[0] == 0.0, "the lone low label keeps its height"


def test_live_score_maps_take_new_scores_in_place(known_result):
    visual, text = known_result.scores["visual"][0], known_result.scores["text"][0]
    live = viz.LiveScoreMaps(IMAGE, GRID, visual, text, known_result)
    before = live.png()
    live.show_scores(255 - IMAGE, text, visual, known_result)
    for ax, scores in zip(live.axes, (text, visual)):
        image, heat = ax.get_images()[:2]
        assert np.array_equal(image.get_array(), 255 - IMAGE)
        assert np.allclose(heat.get_array(), scores.numpy().reshape(GRID))
        assert heat.get_clim() == pytest.approx((float(scores.min()), float(scores.max()))), "the colour bar follows"
    assert np.array_equal(live.axes[2].get_images()[0].get_array(), 255 - IMAGE)
    assert live.png() != before
