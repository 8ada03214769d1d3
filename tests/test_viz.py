"""rclib.viz draws what a result says: the fate colours, the score grid, the filter's cut, the curves."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from rclib import viz
from rclib.filters import outlier_count
from rclib.result import Fate, Slot, from_weights

GRID = (2, 3)  # 6 patches
IMAGE = np.full((12, 18, 3), 0.5)


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


def test_score_heatmap_puts_scores_on_the_patch_grid(known_result):
    scores = known_result.scores["visual"][0]
    figure = viz.score_heatmap(IMAGE, scores, GRID, "visual", highlight=known_result.fate[0] == Fate.KEPT)
    heat = figure.axes[0].get_images()[1]
    assert np.allclose(heat.get_array(), scores.numpy().reshape(GRID))
    outlines = [p for p in figure.axes[0].patches if isinstance(p, Rectangle)]
    assert [(p.get_x(), p.get_y()) for p in outlines] == [(0, 0)], "the kept patch 0 is outlined"
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


@pytest.mark.parametrize("rule", ["lof", "iqr"])
def test_score_histogram_cuts_at_the_lowest_kept_score(rule):
    scores = torch.cat([torch.linspace(0, 1, 60), torch.tensor([3.0, 3.5, 4.0])])
    figure = viz.score_histogram(scores, rule, n_neighbors=10)
    k = int(outlier_count(scores, rule, 10))
    assert k > 0
    cut = [line for line in figure.axes[0].lines if line.get_linestyle() == "--"]
    assert cut and cut[0].get_xdata()[0] == pytest.approx(float(scores.sort().values[-k]))
    assert f"top {k} of 63" in " ".join(t.get_text() for t in figure.axes[0].get_legend().get_texts())


def test_accuracy_vs_tokens_draws_a_line_per_method():
    rows = [{"method": "full", "budget": "all", "mean_tokens": 144, "accuracy": 0.9},
            {"method": "rc", "budget": "adaptive", "mean_tokens": 20, "accuracy": 0.8},
            {"method": "rc", "budget": "16", "mean_tokens": 16, "accuracy": 0.7},
            {"method": "rc", "budget": "32", "mean_tokens": 32, "accuracy": 0.8},
            {"method": "fastervlm", "budget": "16", "mean_tokens": 16, "accuracy": 0.5}]
    ax = viz.accuracy_vs_tokens(rows).axes[0]
    by_label = {line.get_label(): line for line in ax.lines}
    assert list(by_label["rc"].get_xdata()) == [16, 32]
    assert to_rgba(by_label["rc"].get_color()) == to_rgba(viz.METHOD_COLOURS["rc"])
    assert list(by_label["fastervlm"].get_ydata()) == [0.5]
    assert by_label["full (144 tokens)"].get_ydata()[0] == 0.9
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    assert [list(s.get_xdata()) for s in stars if len(s.get_xdata())] == [[20]]


def test_method_grid_has_a_map_per_image_and_method(known_result):
    figure = viz.method_grid([IMAGE], {"rc": known_result, "again": known_result}, GRID, ["image a"])
    assert len(figure.axes) == 2
    assert figure.axes[0].get_ylabel() == "image a"
    assert figure.axes[0].get_title() == "rc: K = 4"


def test_answers_panel_lists_answers_and_marks_the_truth():
    figure = viz.answers_panel("what colour?", {"all tokens": ("red", 576), "rc": ("blue", 58)}, truth="red")
    texts = [cell.get_text().get_text() for cell in figure.axes[0].tables[0].get_celld().values()]
    assert {"red", "blue", "576", "58", "yes", "no"} <= set(texts)


def test_answer_figures_for_the_cli(known_result):
    encoded = SimpleNamespace(pixel_values=torch.zeros(1, 3, 12, 18), grid=GRID,
                              cls_attn=known_result.scores["visual"], text_sim=known_result.scores["text"])
    figures = viz.answer_figures(encoded, known_result, {"question": "q?", "answer": "a"})
    assert set(figures) == {"visual_scores", "text_scores", "token_fates", "overview"}
    assert all(isinstance(f, Figure) for f in figures.values())
    for figure in figures.values():
        viz.close(figure)


def test_render_figures_writes_the_notebooks_figures(tiny_model, tmp_path, monkeypatch):
    from rclib import figures

    rows = [{"method": m, "budget": b, "mean_tokens": t, "accuracy": 0.5, "accuracy_small": 0.4, "accuracy_large": 0.6}
            for m, b, t in (("full", "all", 64), ("rc", "adaptive", 9), ("rc", "8", 8), ("fastervlm", "8", 8))]
    monkeypatch.setattr(figures, "bench_rows", lambda model, n: rows)  # the bench itself is tested with rclib.bench
    paths = figures.render_figures(tmp_path, tiny_model)
    assert {p.name for p in paths} == {"overview.png", "filter_thresholds.png", "method_grid.png",
                                       "accuracy_vs_tokens.png", "accuracy_by_size.png"}
    assert all(p.stat().st_size > 1000 for p in paths)
