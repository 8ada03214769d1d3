"""rclib.gallery runs the tiny model on examples and hands viz what it draws."""
import numpy as np
import pytest

from rclib import gallery, viz
from rclib.examples import Example
from rclib.filters import outlier_count
from rclib.methods import METHODS


@pytest.fixture(scope="module")
def example(tiny_images):
    return Example("first", tiny_images[0], "what color is the circle ?", answer="red")


def test_the_grid_shows_every_method_that_compresses_an_example_before_the_llm():
    assert gallery.GRID_METHODS == tuple(name for name, spec in METHODS.items() if spec.takes_budget
                                         and spec.placement == "before_llm" and "target" not in spec.needs)
    assert {"rc", "prumerge", "fastervlm"} <= set(gallery.GRID_METHODS)
    assert not {"full", "fastv", "oracle"} & set(gallery.GRID_METHODS), "all tokens, inside the LLM, needs the truth"


def test_answer_figures_draw_the_run_on_the_model_s_own_image(tiny_model, example):
    run = tiny_model.answer(example.image, example.question, "rc")
    figures = gallery.answer_figures(tiny_model, run)
    assert set(figures) == {"scores", "overview"}
    shown = figures["scores"].axes[0].get_images()[0].get_array()
    assert np.array_equal(shown, tiny_model.display_images(run.encoded)[0])
    assert example.question in figures["overview"]._suptitle.get_text()
    run = tiny_model.answer(example.image, example.question, "fastervlm", budget=8)
    assert set(gallery.answer_figures(tiny_model, run)) == {"scores"}, "the overview is RC's four stages"


def test_threshold_figure_cuts_where_the_filter_does(tiny_model, example):
    figure = gallery.threshold_figure(tiny_model, example, n_neighbors=10)
    scores = tiny_model.encode(example.image, example.question).cls_attn[0]
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["LOF (10 neighbours)", "IQR"]
    for ax, rule in zip(panels, ("lof", "iqr")):
        k = int(outlier_count(scores, rule, 10))
        cuts = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"]
        assert cuts == ([pytest.approx(float(scores.sort().values[-k]))] if k else []), rule


def test_render_figures_writes_the_notebooks_figures(tiny_model, tmp_path, monkeypatch):
    rows = [{"method": m, "budget": b, "mean_tokens": t, "accuracy": 0.5, "accuracy_small": 0.4, "accuracy_large": 0.6}
            for m, b, t in (("full", "all", 64), ("rc", "adaptive", 9), ("rc", "8", 8), ("fastervlm", "8", 8))]
    monkeypatch.setattr(gallery, "bench_rows", lambda model, n, families: rows)  # the bench itself is tested with rclib.bench
    paths = gallery.render_figures(tmp_path, tiny_model)
    assert {p.name for p in paths} == {"overview.png", "filter_thresholds.png", "method_grid.png",
                                       "accuracy_vs_tokens.png", "accuracy_breakdown.png"}
    assert all(p.stat().st_size > 1000 for p in paths)


def test_method_grid_figure_has_a_column_per_method(tiny_model, tiny_images):
    examples = [Example(f"image {i}", image, "what color is the circle ?") for i, image in enumerate(tiny_images[:2])]
    figure = gallery.method_grid_figure(tiny_model, examples, ("rc", "fastervlm"))
    titles = [ax.get_title().split(":")[0] for ax in figure.axes]
    assert titles == ["the image", "rc", "fastervlm"] * 2, "per example: the plain image, then a map per method"
    assert [t.get_text() for t in figure.texts] == ["image 0: what color is the circle ?",
                                                    "image 1: what color is the circle ?"], "the question per row"
    viz.close(figure)


def test_trend_puts_a_change_in_words():
    assert gallery.trend(0.4, 0.8) == "rises from 0.40 to 0.80"
    assert gallery.trend(0.66, 0.27) == "falls from 0.66 to 0.27"
    assert gallery.trend(0.5, 0.5) == "stays at 0.50"
    assert gallery.trend(0.50, 0.51) == "barely moves (0.50 to 0.51)"


def test_ranking_orders_the_methods_at_one_budget():
    rows = [{"method": "rc", "budget": 64, "accuracy": 0.7, "ci": {"accuracy": [0.65, 0.75]}},
            {"method": "divprune", "budget": 64, "accuracy": 0.8, "ci": {"accuracy": [0.72, 0.86]}},
            {"method": "random", "budget": 64, "accuracy": 0.2, "ci": {"accuracy": [0.15, 0.26]}},
            {"method": "rc", "budget": 128, "accuracy": 0.9}]
    assert gallery.ranking(rows, "accuracy", 64) == "divprune 0.80 ~ rc 0.70 > random 0.20"
    assert gallery.ranking(rows, "accuracy", 64, top=1) == "divprune 0.80 (then 2 more)"
    del rows[0]["ci"]
    assert gallery.ranking(rows, "accuracy", 64) == "divprune 0.80 ~ rc 0.70 ~ random 0.20", "no interval: no order claimed"


def test_the_figures_and_the_card_compare_the_featured_methods():
    from rclib.shapes.evaluate import COMPARED

    assert gallery.CURVE_METHODS == COMPARED == tuple(name for name, spec in METHODS.items() if spec.featured)
    assert {"full", "rc"} <= set(COMPARED) and all(METHODS[m].placement == "before_llm" for m in COMPARED)
