"""Figures of tiled images (LLaVA-NeXT, LLaVA-OneVision): each view drawn as the user sees it, the base view and the
tiles' picture with its tile borders, per-token values on each view's cells, counts in the model's units."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from rclib import gallery, viz
from rclib.cli import main
from rclib.examples import Example
from rclib.live import LiveFigure
from rclib.methods import METHODS
from rclib.views import View, image_views, view_cells, view_maps
from rclib.widgets import Explorer

QUESTION = "what colour is the circle ?"
FAMILIES = {"next": ("tiny_next_dir", "tiny_clip_dir"), "onevision": ("tiny_onevision_dir", "tiny_siglip_dir")}


@pytest.fixture(scope="module", params=list(FAMILIES))
def tiled_model(request):
    from rclib.models import load

    model_dir, text_dir = (request.getfixturevalue(name) for name in FAMILIES[request.param])
    return load(model_dir, text_encoder=text_dir, device="cpu", dtype=torch.float32)


def smooth(shape: tuple[int, int]) -> np.ndarray:
    """A smooth uint8 picture of (h, w): a misplaced tile or a flipped view shows as a large difference."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], -1).astype(np.uint8)


def test_view_maps_are_nan_exactly_where_no_token_is():
    places = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 0, 0], [1, 1, 2], [-1, -1, -1]])  # [N, 3], padded
    first, second = view_maps(torch.arange(6.0), places, [(2, 2), (2, 3)])
    expected_first = np.array([[0, 1], [np.nan, 2]])
    expected_second = np.array([[3, np.nan, np.nan], [np.nan, np.nan, 4]])
    np.testing.assert_array_equal(first, expected_first)
    np.testing.assert_array_equal(second, expected_second)
    colours = view_maps(np.ones((6, 4)), places, [(2, 2), (2, 3)])[1]
    assert colours.shape == (2, 3, 4) and np.isnan(colours).all(axis=2).sum() == 4, "values of any shape per token"


def test_every_real_token_has_one_cell_and_padding_none(tiled_model, tiled_images):
    encoded = tiled_model.encode(tiled_images, [QUESTION] * 3)
    for b in range(3):
        n = int(encoded.token_counts[b])
        maps = view_maps(torch.arange(encoded.n_tokens), encoded.token_places[b], encoded.views[b])
        assert [m.shape for m in maps] == encoded.views[b]
        shown = np.concatenate([m[~np.isnan(m)] for m in maps])
        assert sorted(shown.tolist()) == list(range(n)), "each real token on one cell, no padding token on any"


def test_the_tiles_picture_is_the_tile_layout_the_processor_chose(tiled_model, tiled_images):
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

    config = tiled_model.model.config
    for image in tiled_images:
        encoded = tiled_model.encode(smooth(image.shape[:2]), QUESTION)
        base, tiles = image_views(tiled_model, encoded)
        gh, gw = get_anyres_image_grid_shape(image.shape[:2], config.image_grid_pinpoints,
                                            config.vision_config.image_size)
        assert tiles.title.startswith(f"tiles: {gh} x {gw} crops")
        assert len(tiles.lines) == (gh - 1) + (gw - 1), "a border between each two rows and columns of tiles"
        assert np.array_equal(base.image, tiled_model.display_images(encoded)[0]), "the base view as the model shows it"
        height, width = tiles.image.shape[:2]
        assert abs(height / width - tiles.cells.shape[0] / tiles.cells.shape[1]) < 0.1, "the picture fits its cells"
        whole = np.asarray(Image.fromarray(base.image).resize((width, height), Image.BILINEAR), dtype=float)
        assert np.abs(whole - tiles.image).mean() < 15, "the tiles, stitched and unpadded, show the whole image"


def test_answer_figures_draw_a_column_per_view(tiled_model, tiled_images):
    run = tiled_model.answer(tiled_images[0], QUESTION, "rc", max_new_tokens=2)
    views = image_views(tiled_model, run.encoded)
    figures = gallery.answer_figures(tiled_model, run)
    assert set(figures) == {"scores", "overview"}
    axes = figures["scores"].axes
    assert len(axes) == 4 * 2, "image, visual, text and fates, each for the base view and the tiles"
    assert np.array_equal(axes[1].get_images()[0].get_array(), views[1].image), "the tiles' picture"
    assert [c for c in axes[1].collections if c.get_gid() == "tiles"], "the tiles' borders are drawn"
    heat = axes[3].get_images()[1].get_array()
    np.testing.assert_allclose(heat, view_maps(run.encoded.cls_attn[0], run.encoded.token_places[0],
                                               run.encoded.views[0])[1])
    counts = run.counts(0)
    assert counts["n_input_tokens"] == int(run.encoded.n_llm_tokens[0]) > int(run.encoded.token_counts[0])
    assert axes[6].get_title() == f"rc: {counts['n_input_tokens']} -> {counts['n_output_tokens']} tokens"
    assert {t.get_text() for t in figures["scores"].texts} == {view.title for view in views}, "the columns' titles"
    assert "row ends" in figures["overview"].axes[-1].get_title(), "the token sequence counts the row ends"
    assert figures["scores"].get_figwidth() <= viz.MAX_WIDTH


def test_the_fate_map_draws_each_view(tiled_model, tiled_images):
    run = tiled_model.answer(tiled_images[1], QUESTION, "fastervlm", budget=20, max_new_tokens=2)
    views = image_views(tiled_model, run.encoded)
    figure = viz.fate_map(views, run.result, None)
    assert len(figure.axes) == 2 * 2
    colours = figure.axes[3].get_images()[1].get_array()
    cells = view_cells(run.encoded.token_places[0], run.encoded.views[0])[1]
    np.testing.assert_allclose(colours[cells >= 0], viz.patch_colours(run.result)[cells[cells >= 0]])


def test_answer_writes_figures_for_a_tiled_model(tmp_path, tiled_model, tiled_images):
    image = tmp_path / "image.png"
    Image.fromarray(tiled_images[2]).save(image)
    out = tmp_path / "out"
    model_dir, text_dir = tiled_model.name, tiled_model.text_encoder_name
    assert main(["answer", "--image", str(image), "--question", QUESTION, "--model", model_dir, "--text-encoder",
                 text_dir, "--out", str(out)]) == 0
    record = json.loads((out / "result.json").read_text())
    encoded = tiled_model.encode(tiled_images[2], QUESTION)
    assert record["n_input_tokens"] == int(encoded.n_llm_tokens[0])
    assert {p.name for p in out.glob("*.png")} == {"scores.png", "overview.png"}


def test_the_explorer_draws_each_view_and_keeps_them_live(tiled_model, tiled_images):
    examples = [Example("wide", tiled_images[0], QUESTION), Example("tall", tiled_images[1], "where is it ?")]
    explorer = Explorer(tiled_model, examples, max_new_tokens=2)
    assert explorer.error is None, explorer.errors.outputs
    assert len(explorer.maps.axes) == len(viz.PANELS) * 2 and bytes(explorer.figure.value[:3]) == b"\xff\xd8\xff"
    counts = tiled_model.run(explorer.encoded[("wide", QUESTION)], "rc", max_new_tokens=1).counts(0)
    assert f"{counts['n_input_tokens']} tokens in" in explorer.summary.value, "counts in the model's units"
    assert "tiles' picture" in explorer.legend.value
    first = explorer.maps
    explorer.controls["question"].value = "where is it ?"
    assert explorer.error is None and explorer.maps is first, "the same image's cells: scores change in place"
    explorer.controls["example"].value = "tall"
    assert explorer.error is None and explorer.maps is not first, "other cells: a new figure"
    explorer.controls["method"].value = "fastervlm"
    assert explorer.error is None, explorer.errors.outputs


def test_live_scores_of_a_view_change_in_place(tiled_model, tiled_images):
    encoded = tiled_model.encode(tiled_images[0], QUESTION)
    views = image_views(tiled_model, encoded)
    result = tiled_model.compress(encoded, "rc")
    live = LiveFigure(views, None, {"visual": encoded.cls_attn[0], "text": encoded.text_sim[0]}, result)
    before = live.jpeg()
    assert live.fits(views) and not live.fits(views[:1])
    live.show_scores(views, {"visual": encoded.text_sim[0], "text": encoded.cls_attn[0]}, result)
    heat = live.axes[3].get_images()[1]
    np.testing.assert_allclose(heat.get_array(), view_maps(encoded.text_sim[0], encoded.token_places[0],
                                                           encoded.views[0])[1])
    assert heat.get_clim() == pytest.approx((float(encoded.text_sim.min()), float(encoded.text_sim.max())))
    assert live.jpeg() != before


def test_one_grid_of_any_size_is_drawn_as_its_own_image(tiny_qwen_dir, tiled_images):
    """Qwen2.5-VL: one grid per image, its size the image's; a batch pads the smaller ones, a figure cuts them back."""
    from rclib.models import load

    model = load(tiny_qwen_dir, device="cpu", dtype=torch.float32)
    batch = model.encode(tiled_images, [QUESTION] * 3)
    assert batch.grid is None
    for b, image in enumerate(tiled_images):
        alone = model.encode(image, QUESTION)
        (view,) = image_views(model, batch, b)
        assert np.array_equal(view.image, model.display_images(alone)[0]), "the batch's padding cut off"
        assert view.cells.shape == alone.grid and view.cells.max() == int(batch.token_counts[b]) - 1
    run = model.answer(tiled_images[0], QUESTION, "fastervlm", budget=8, max_new_tokens=1)
    assert len(gallery.answer_figures(model, run)["scores"].axes) == 4, "one grid: one row of panels"


def test_the_explorer_s_budget_follows_the_shown_image(tiled_model, tiled_images):
    examples = [Example("wide", tiled_images[0], QUESTION), Example("tall", tiled_images[1], QUESTION)]
    tokens = {e.name: tiled_model.encode(e.image, QUESTION).n_tokens for e in examples}
    assert tokens["wide"] != tokens["tall"], "the two tile layouts give two token counts"
    explorer = Explorer(tiled_model, examples, max_new_tokens=2)
    budget = explorer.controls["budget"]
    assert budget.max == explorer.n_tokens == tokens["wide"]
    budget.value = tokens["wide"]
    explorer.controls["example"].value = "tall"
    assert explorer.error is None, explorer.errors.outputs
    assert budget.max == tokens["tall"] and budget.value == min(tokens["wide"], tokens["tall"])
    assert f"of the {tokens['tall']} visual tokens" in explorer.method_note.value
    assert f"{tokens['tall']} of {tokens['tall']}" in explorer.answers_table.value
    width, height = explorer.maps.css_size
    assert width <= viz.MAX_WIDTH * 96 and height <= 720, "the figure fits a 1,280 x 720 slide"
    explorer.controls["example"].value = "wide"
    assert budget.max == tokens["wide"] and explorer.error is None


@pytest.mark.parametrize("tiles", [(48, 48), (24, 48), (48, 24), (24, 72)])  # LLaVA-NeXT: 2 x 2, 1 x 2, 2 x 1, 1 x 3
def test_the_explorer_s_figure_of_views_is_a_row_per_view_that_fits_a_slide(tiles):
    views = [View(np.zeros((336, 336, 3), np.uint8), np.arange(576).reshape(24, 24), "base view"),
             View(np.zeros((*tiles, 3), np.uint8), np.arange(tiles[0] * tiles[1]).reshape(tiles), "tiles")]
    kinds = tuple(panel.kind for panel in viz.PANELS.values())
    axes = viz.panel_axes(kinds, views, by_view=True)
    width, height = axes[0].figure.get_size_inches() * 96  # CSS px at the explorer's 96 per inch
    assert width <= viz.MAX_WIDTH * 96 and height <= 720 - 140, "a slide shows it with a line of controls above"
    boxes = [ax.get_position() for ax in axes]  # kind by kind, then view
    assert boxes[0].x0 == boxes[1].x0 and boxes[0].y0 > boxes[1].y0, "a kind's column: the base view above the tiles"
    assert boxes[0].y0 == boxes[2].y0 and boxes[0].x0 < boxes[2].x0, "a view's row: its panels left to right"
    assert [t.get_text() for t in axes[0].figure.texts] == ["base view", "tiles"], "each row titled beside it"


def test_the_method_grid_draws_each_view_of_each_image(tiled_model, tiled_images):
    examples = [Example("wide", tiled_images[0], QUESTION), Example("tall", tiled_images[1], QUESTION)]
    figure = gallery.method_grid_figure(tiled_model, examples, ("rc", "fastervlm"))
    titles = [ax.get_title().split(":")[0] for ax in figure.axes]
    assert titles == ["base view", "rc", "fastervlm", "tiles", "rc", "fastervlm"] * 2, "per image, a line per view"
    bordered = [i for i, ax in enumerate(figure.axes) if any(c.get_gid() == "tiles" for c in ax.collections)]
    assert bordered == [3, 4, 5, 9, 10, 11], "the tiles' borders on every panel of the tiles' picture"
    encoded = tiled_model.encode([e.image for e in examples], [QUESTION] * 2)
    result = tiled_model.compress(encoded, "fastervlm")[1]
    cells = view_cells(encoded.token_places[1], encoded.views[1])[1]
    colours = figure.axes[-1].get_images()[1].get_array()
    np.testing.assert_allclose(colours[cells >= 0], viz.patch_colours(result)[cells[cells >= 0]])
    assert figure.get_figwidth() <= viz.MAX_WIDTH
    viz.close(figure)
    shown = {ax.get_title().split(":")[0] for ax in gallery.method_grid_figure(tiled_model, examples[:1]).axes}
    square_only = {m for m in gallery.GRID_METHODS if METHODS[m].layout == "grid"}
    assert square_only and shown == {"base view", "tiles", *gallery.GRID_METHODS} - square_only, \
        "by default every method that reads tiles"


def test_rclib_figures_draws_a_tiled_model(tiled_model, tmp_path, monkeypatch):
    rows = [{"method": m, "budget": b, "mean_tokens": t, "accuracy": 0.5, "accuracy_small": 0.4} for m, b, t in
            (("full", "all", 300), ("rc", "adaptive", 40), ("fastervlm", "64", 64))]
    monkeypatch.setattr(gallery, "bench_rows", lambda model, n, families: rows)  # rclib.bench's own tests run it
    paths = gallery.render_figures(tmp_path, tiled_model)
    assert {p.name for p in paths} == {"overview.png", "filter_thresholds.png", "method_grid.png",
                                       "accuracy_vs_tokens.png", "accuracy_breakdown.png"}
