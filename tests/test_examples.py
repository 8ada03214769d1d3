"""The examples: ShapesWorld scenes with their truth, the bundled photographs with their questions."""
import json

from rclib.examples import EXAMPLE_METHODS, examples_for_model, photo_examples, shapes_examples
from rclib.methods import METHODS


def test_shapes_examples_know_their_answer():
    scenes = shapes_examples(2)
    assert [e.name for e in scenes] == ["shapes scene 0", "shapes scene 1"]
    assert all(e.answer and e.question for e in scenes)


def test_photo_examples_read_the_listing(tmp_path):
    (tmp_path / "questions.json").write_text(json.dumps({"cat.jpg": ["What animal?", "What colour?"]}))
    photos = photo_examples(tmp_path)
    assert [(e.name, e.image, e.question, e.answer) for e in photos] == [
        ("cat: What animal?", tmp_path / "cat.jpg", "What animal?", None),
        ("cat: What colour?", tmp_path / "cat.jpg", "What colour?", None)]
    assert photo_examples(tmp_path / "missing") == []


def test_the_embedded_model_sees_scenes_first_and_others_photos_first():
    photos, scenes = photo_examples(), shapes_examples(2)
    assert photos, "data/images/questions.json lists the bundled photographs"
    assert [e.name for e in examples_for_model("shapes", 2)] == [e.name for e in scenes + photos]
    assert [e.name for e in examples_for_model("llava-1.5-7b", 2)] == [e.name for e in photos + scenes]


def test_example_methods_are_those_the_encoders_can_feed():
    assert EXAMPLE_METHODS == tuple(m for m in METHODS if m != "oracle"), "only the oracle needs the truth mask"
