"""The examples: ShapesWorld scenes with their truth, the bundled photographs with their questions."""
import json
from types import SimpleNamespace

from rclib.examples import (EXAMPLE_METHODS, accuracy_caveat, caveats, english_list, examples_for_model, known_words,
                            learned_families, photo_examples, shapes_examples, unknown_words)
from rclib.methods import METHODS
from rclib.shapes.world import FAMILIES


def test_english_list():
    assert [english_list(x) for x in ([], ["a"], ["a", "b"], ("a", "b", "c"))] == ["none", "a", "a and b", "a, b and c"]
    assert english_list([], "nothing") == "nothing"


def test_shapes_examples_know_their_answer_and_ask_every_family():
    scenes = shapes_examples(len(FAMILIES))
    assert [e.name for e in scenes] == [f"shapes scene {i} ({family})" for i, family in enumerate(FAMILIES)]
    assert all(e.answer and e.question and e.scene for e in scenes)


def test_photo_examples_read_the_listing(tmp_path):
    (tmp_path / "questions.json").write_text(json.dumps({"cat.jpg": ["What animal?", "What colour?"]}))
    photos = photo_examples(tmp_path)
    assert [(e.name, e.image, e.question, e.answer) for e in photos] == [
        ("cat: What animal?", tmp_path / "cat.jpg", "What animal?", None),
        ("cat: What colour?", tmp_path / "cat.jpg", "What colour?", None)]
    assert not any(e.scene for e in photos)
    assert photo_examples(tmp_path / "missing") == []


def test_the_embedded_model_sees_scenes_first_and_others_photos_first():
    photos, scenes = photo_examples(), shapes_examples(2)
    assert photos, "data/images/questions.json lists the bundled photographs"
    assert [e.name for e in examples_for_model("shapes", 2)] == [e.name for e in scenes + photos]
    assert [e.name for e in examples_for_model("llava-1.5-7b", 2)] == [e.name for e in photos + scenes]


def test_example_methods_are_those_the_encoders_can_feed():
    assert EXAMPLE_METHODS == tuple(m for m in METHODS if m != "oracle"), "only the oracle needs the truth mask"


def test_a_word_level_model_knows_its_words_and_flags_the_others(tiny_model):
    words = known_words(tiny_model)
    assert words[:4] == ["USER", "ASSISTANT", ":", "?"] and "<unk>" not in words and "<image>" not in words
    assert unknown_words(tiny_model, "what colour is the zebra , the zebra ?") == ["zebra"]
    assert unknown_words(tiny_model, "what colour is the circle ?") == []


def test_caveats_say_why_an_output_is_not_an_answer(tiny_model):
    assert caveats(tiny_model, "what colour is the circle ?", scene=True) == []
    photo, = caveats(tiny_model, "what colour is the circle ?", scene=False)
    assert "ShapesWorld scenes only" in photo and "not an answer" in photo
    assert ["“zebra”, “dog”" in c for c in caveats(tiny_model, "zebra dog ?", scene=True)] == [True]


def test_a_subword_model_has_no_caveat():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(unk_token="<unk>")), unk_token="<unk>")
    model = SimpleNamespace(processor=SimpleNamespace(tokenizer=bpe))  # what these functions read of a model
    assert known_words(model) is None and unknown_words(model, "zebra ?") == []
    assert caveats(model, "What animal is this?", scene=False) == []


def test_accuracy_caveat_names_the_words_the_model_never_saw(tiny_model):
    assert accuracy_caveat(tiny_model, ["what colour is the circle ?"]) is None
    caveat = accuracy_caveat(tiny_model, ["what colour is the circle ?", "is the zebra striped ?"])
    assert "1 of these 2 questions" in caveat and "“zebra”, “striped”" in caveat and "evidence" in caveat


def test_a_question_of_a_family_the_model_did_not_learn_is_not_an_answer(tiny_model, tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"all_tokens": {"accuracy_attribute": 0.99,
                                                                      "accuracy_glyph": 0.11}}))
    model = SimpleNamespace(processor=tiny_model.processor, model=SimpleNamespace(name_or_path=str(tmp_path / "llava")))
    glyph = caveats(model, "what number is on the red circle ?", scene=True)
    assert any("did not learn glyph questions" in c and "11%" in c and "It answers attribute questions" in c
               for c in glyph)
    assert not any("did not learn" in c for c in caveats(model, "what color is the circle ?", scene=True))
    assert not any("did not learn" in c for c in caveats(tiny_model, "what number is on the red circle ?", scene=True)), \
        "no metrics.json beside the checkpoint: nothing is claimed"


def test_a_benchmark_of_untrained_families_says_its_accuracy_means_nothing(tiny_model, tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"all_tokens": {"accuracy_attribute": 0.99,
                                                                      "accuracy_glyph": 0.11}}))
    model = SimpleNamespace(processor=tiny_model.processor, model=SimpleNamespace(name_or_path=str(tmp_path / "llava")))
    assert learned_families(model) == tuple(f for f in FAMILIES if f != "glyph"), "unmeasured families count as learned"
    assert learned_families(tiny_model) == FAMILIES
    caveat = accuracy_caveat(model, ["what color is the circle ?", "what number is on the red circle ?"])
    assert "did not learn glyph questions" in caveat and "glyph 11%" in caveat
    assert accuracy_caveat(model, ["what color is the circle ?"]) is None
