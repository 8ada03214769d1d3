"""The explorer, driven from pytest: controls rerun compress + generate only; errors are shown."""
from types import SimpleNamespace

import numpy as np
import pytest

from rclib.examples import EXAMPLE_METHODS, Example
from rclib.methods import METHODS
from rclib.methods.registry import Control
from rclib.widgets import (EMPTY_QUESTION, LABEL_WIDTH, MAX_TRACK, OPTION_CONTROLS, READOUT_WIDTH, Explorer,
                           answers_html, input_notes, option_controls, question_caveats, slider_layout,
                           vocabulary_note)

N_TOKENS = 64  # the tiny model's visual tokens (tests/conftest.py)


@pytest.fixture
def explorer(tiny_model, tiny_images):
    examples = [Example("first", tiny_images[0], "what color is the circle ?", answer="red", scene=True),
                Example("second", tiny_images[1], "how many shapes ?")]
    return Explorer(tiny_model, examples, max_new_tokens=3)


def test_starts_with_rc_and_draws(explorer):
    assert explorer.error is None, explorer.errors.outputs
    assert explorer.state["method"] == "rc" and explorer.result.method == "rc"
    assert set(explorer.answers) == {"all tokens", "rc"}
    assert explorer.figure.format == "jpeg" and bytes(explorer.figure.value[:3]) == b"\xff\xd8\xff"
    assert f"{explorer.result.counts(0)['n_output_tokens']} out" in explorer.summary.value
    table = explorer.answers_table.value
    assert table.startswith("<table") and f"{N_TOKENS} of {N_TOKENS}" in table and "true answer: red" in table
    assert explorer.warnings == [] and "Not an answer" not in explorer.warning.value, "a scene in its words: answered"


def test_moving_a_control_recompresses_without_reencoding(explorer, monkeypatch):
    calls = []
    monkeypatch.setattr(explorer.model, "encode", lambda *a, **k: calls.append(a))
    before = (explorer.summary.value, explorer.figure.value)
    explorer.controls["method"].value = "fastervlm"
    explorer.controls["budget"].value = 5
    assert explorer.error is None, explorer.errors.outputs
    assert explorer.result.method == "fastervlm" and int(explorer.result.n_output[0]) == 5
    assert "<b>5 out</b>" in explorer.summary.value
    assert (explorer.summary.value, explorer.figure.value) != before
    assert calls == [], "the encoders ran again for the same image and question"
    assert explorer.controls["rule"].disabled and not explorer.controls["budget"].disabled


def test_rc_controls_reach_the_method(explorer):
    explorer.controls["budget"].value = 12
    with_text = int(explorer.result.n_text[0])
    explorer.controls["text_stage"].value = False
    assert with_text > 0 and int(explorer.result.n_text[0]) == 0
    assert explorer.method_options() == {"rule": "lof", "n_neighbors": 20, "iqr_factor": 1.5, "text_stage": False,
                                         "knn_k": 32}


def test_a_new_example_is_encoded_once_and_brings_its_question(explorer):
    explorer.controls["example"].value = "second"
    assert explorer.state["question"] == "how many shapes ?"
    assert set(explorer.encoded) == {("first", "what color is the circle ?"), ("second", "how many shapes ?")}


def test_a_raising_callback_shows_its_error(explorer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("compression exploded")

    monkeypatch.setattr(explorer.model, "compress", broken)
    explorer.controls["knn_k"].value = 7
    assert isinstance(explorer.error, RuntimeError)
    shown = "".join(output["text"] for output in explorer.errors.outputs)
    assert "compression exploded" in shown and "Traceback" in shown
    monkeypatch.undo()
    explorer.controls["knn_k"].value = 8
    assert explorer.error is None and explorer.errors.outputs == ()


def test_iqr_factor_slider_changes_the_rc_iqr_count(explorer):
    explorer.controls["method"].value = "rc"
    explorer.controls["rule"].value = "iqr"
    assert not explorer.controls["iqr_factor"].disabled
    explorer.controls["iqr_factor"].value = 0.0
    loose = int(explorer.result.n_visual[0])
    explorer.controls["iqr_factor"].value = 4.0
    assert int(explorer.result.n_visual[0]) < loose and explorer.error is None
    explorer.controls["rule"].value = "lof"
    assert explorer.controls["iqr_factor"].disabled


@pytest.mark.parametrize("method", EXAMPLE_METHODS)
def test_the_registry_says_which_controls_apply(explorer, method):
    spec = METHODS[method]
    explorer.controls["method"].value = method
    assert explorer.error is None, explorer.errors.outputs
    enabled = {name for name in OPTION_CONTROLS if not explorer.controls[name].disabled}
    expected = set(OPTION_CONTROLS) & set(spec.options)
    if "rule" in spec.options:  # under the LOF rule the IQR factor is not read
        expected -= {"iqr_factor"}
    assert enabled == expected
    assert explorer.method_options() == {name: spec.options[name] for name in OPTION_CONTROLS if name in spec.options}
    assert explorer.controls["budget"].disabled == (not spec.takes_budget)
    labels = {(False, False): "budget (not used)", (True, True): "budget (0: adaptive)",
              (True, False): "budget (0: default)"}
    assert explorer.controls["budget"].description == labels[(spec.takes_budget, spec.adaptive)]


def test_a_new_method_starts_from_its_defaults_and_recompresses_once(explorer, monkeypatch):
    explorer.controls["knn_k"].value = 7
    calls = []
    run = explorer.model.run
    monkeypatch.setattr(explorer.model, "run", lambda *a, **k: calls.append(a[1]) or run(*a, **k))
    explorer.controls["method"].value = "prumerge+"
    assert explorer.controls["knn_k"].value == METHODS["prumerge+"].options["knn_k"] == 32
    assert calls == ["prumerge+"], "one compression for the method change, not one per reset control"


def test_no_examples_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="at least one example"):
        Explorer(tiny_model, [])


def test_the_budget_slider_has_a_pixel_per_token(explorer):
    track = int(explorer.controls["budget"].layout.width.removesuffix("px")) - LABEL_WIDTH - READOUT_WIDTH
    assert explorer.controls["budget"].max == N_TOKENS and track >= N_TOKENS
    assert slider_layout(576).width == f"{LABEL_WIDTH + 576 + READOUT_WIDTH}px", "LLaVA-1.5's tokens: a px each"
    assert slider_layout(2880).width == f"{LABEL_WIDTH + MAX_TRACK + READOUT_WIDTH}px", "a tiled model's share it"


def test_full_greys_out_the_budget_and_says_why(explorer):
    explorer.controls["method"].value = "full"
    assert explorer.controls["budget"].disabled and explorer.controls["budget"].description == "budget (not used)"
    assert f"all {N_TOKENS} visual tokens" in explorer.method_note.value
    assert all(explorer.controls[name].disabled for name in OPTION_CONTROLS)


def test_the_vocabulary_is_shown_and_unknown_words_are_warned_about(explorer):
    assert "reads only these" in explorer.vocabulary.value and "<code>" in explorer.vocabulary.value
    explorer.controls["question"].value = "what colour is the zebra ?"
    assert len(explorer.warnings) == 1 and "“zebra”" in explorer.warnings[0]
    assert "Not an answer" in explorer.warning.value and "not an answer" in explorer.answers_table.value
    assert "correct" not in explorer.answers_table.value, "an output that is no answer is not marked right or wrong"


def test_a_photo_on_a_closed_vocabulary_model_is_not_answered(explorer):
    explorer.controls["example"].value = "second"  # not a ShapesWorld scene
    assert any("trained on ShapesWorld scenes only" in w for w in explorer.warnings)
    assert "llava-1.5-7b" in explorer.warning.value, "the warning says how to get a real checkpoint"


def test_answers_html_escapes_and_judges():
    table = answers_html("<b>?", {"all tokens": ("red", 576), "rc": ("<i>blue", 58)}, 576, "red", meaningful=True)
    assert "&lt;b&gt;?" in table and "&lt;i&gt;blue" in table and "<b>?" not in table
    assert table.count("<td") == 8 and ">yes<" in table and ">no<" in table and "58 of 576" in table
    stutter = answers_html("q", {"rc": ("Square square square", 91), "fastv": ("circle square", 64)}, 576, "square", True)
    assert stutter.count(">yes<") == 1 and stutter.count(">no<") == 1, "judged by the first word, as the bench scores"


def test_the_vocabulary_note_names_the_families_a_model_did_not_learn():
    assert "not learned" not in vocabulary_note(["red", "circle"])
    note = vocabulary_note(["red", "circle"], ("attribute", "existence", "glyph"))
    assert "It answers attribute, existence and glyph questions" in note and "(position, choice: not learned)" in note
    assert vocabulary_note(None, ("attribute",)) == "", "an open vocabulary (a real checkpoint) gets no note"



def test_questions_without_words_and_cropped_images_are_flagged(explorer, tiny_model):
    explorer.controls["question"].value = "?"
    assert explorer.error is None, explorer.errors.outputs
    assert any("has no word" in w for w in explorer.warnings) and "not an answer" in explorer.answers_table.value
    assert question_caveats("  ? ") and not question_caveats("what color ?")
    assert any("80 x 64 image is not square" in n for n in explorer.notes), "the tiny images are 80 x 64"
    assert input_notes(tiny_model, "what color ?", np.zeros((64, 64, 3), np.uint8)) == []


def test_an_empty_question_is_not_asked_and_says_so(explorer):
    figure = explorer.figure.value
    explorer.controls["question"].value = "  "
    assert explorer.error is None, "no traceback: a note says what to do"
    assert explorer.notes == [EMPTY_QUESTION] and "type a question" in explorer.warning.value
    assert explorer.answers_table.value == "" and explorer.figure.value == figure, "no answer, the last figure"
    explorer.controls["question"].value = "how many shapes ?"
    assert explorer.error is None and explorer.notes != [EMPTY_QUESTION] and "how many" in explorer.answers_table.value


def test_the_controls_are_the_ones_the_specs_declare(explorer):
    assert list(OPTION_CONTROLS) == ["rule", "n_neighbors", "iqr_factor", "text_stage", "knn_k"], "RC's, in its order"
    c = explorer.controls
    assert (type(c["rule"]).__name__, c["rule"].description, list(c["rule"].options), c["rule"].value) == (
        "Dropdown", "filter rule", ["lof", "iqr"], "lof")
    sliders = {name: (type(c[name]).__name__, c[name].description, c[name].min, c[name].max, c[name].step, c[name].value,
                      c[name].layout.width) for name in ("n_neighbors", "iqr_factor", "knn_k")}
    assert sliders == {"n_neighbors": ("IntSlider", "LOF neighbours", 2, 60, 1, 20, slider_layout(58).width),
                       "iqr_factor": ("FloatSlider", "IQR factor", 0.0, 4.0, 0.25, 1.5, slider_layout(16).width),
                       "knn_k": ("IntSlider", "KNN k (merge)", 1, 64, 1, 32, slider_layout(63).width)}
    assert (type(c["text_stage"]).__name__, c["text_stage"].description, c["text_stage"].value) == (
        "Checkbox", "text stage (recovery)", True)
    shared = Control("k", "int", high=9)
    specs = [SimpleNamespace(name="a", controls={"k": shared}, options={"k": 3}),
             SimpleNamespace(name="b", controls={"k": shared, "s": Control("s", "switch")}, options={"k": 5, "s": True})]
    assert option_controls(specs) == {"k": (shared, 3), "s": (Control("s", "switch"), True)}, "one control per name"
    specs[1].controls["k"] = Control("k", "int", high=10)
    with pytest.raises(ValueError, match="another control"):
        option_controls(specs)


def test_the_counts_name_what_picked_the_kept_tokens(explorer):
    assert "kept (visual)" in explorer.summary.value, "rc keeps by the visual score"
    explorer.controls["method"].value = "divprune"
    assert f"{int(explorer.result.n_visual[0])} {METHODS['divprune'].kept_label} /" in explorer.summary.value
    assert "visual" not in METHODS["divprune"].kept_label
