from collections import Counter

import numpy as np
import pytest

from rclib.shapes.world import (
    COLORS,
    FAMILIES,
    FILL_PATTERNS,
    FILL_SHADE,
    GLYPH_RGB,
    GRID_SIZE,
    IMAGE_SIZE,
    LETTERS,
    NUM_PATCHES,
    PATCH_SIZE,
    SHAPES,
    TEMPLATES,
    WorldConfig,
    glyph_tiles,
    question_family,
    make_scene,
    patch_mask,
    sample_vqa,
    scene_questions,
    score_answer,
    vocabulary,
)


def test_llava_geometry():
    assert (GRID_SIZE, NUM_PATCHES) == (24, 576)
    assert GRID_SIZE * PATCH_SIZE == IMAGE_SIZE


def test_same_seed_and_index_same_sample_whatever_else_is_drawn():
    a = sample_vqa(7, 5)
    b = sample_vqa(7, 8)
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and (x.question, x.answer, x.family) == (y.question, y.answer, y.family)
    late = sample_vqa(7, 3, start=2)[0]
    assert np.array_equal(late.image, a[2].image) and late.question == a[2].question
    assert not np.array_equal(make_scene(0, 0).image, make_scene(1, 0).image)


def test_families_round_robin_and_subsets():
    samples = sample_vqa(0, 50)
    assert [s.family for s in samples[:5]] == list(FAMILIES)
    assert Counter(s.family for s in samples) == {f: 10 for f in FAMILIES}
    only = sample_vqa(0, 6, families=("glyph", "position"))
    assert [s.family for s in only] == ["glyph", "position"] * 3


def test_unknown_family_and_bad_config_raise():
    with pytest.raises(ValueError, match="families"):
        sample_vqa(0, 2, families=("count_sheep",))
    with pytest.raises(ValueError, match="objects per scene"):
        WorldConfig(min_objects=9, max_objects=8)


@pytest.mark.parametrize("index", range(8))
def test_scene_pixels_match_objects(index):
    scene = make_scene(3, index)
    config = WorldConfig()
    assert scene.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and scene.image.dtype == np.uint8
    assert len(scene.objects) <= config.max_objects
    assert len({(o.color, o.shape) for o in scene.objects}) == len(scene.objects), "(colour, shape) pairs are unique"
    covered = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=int)
    for obj in scene.objects:
        covered += obj.pixel_mask
        colour = np.array(COLORS[obj.color])
        tiles = np.zeros_like(obj.pixel_mask)
        for gy, gx in glyph_tiles(obj.pixel_mask, obj.center) if obj.digit else []:
            tiles[gy * PATCH_SIZE : (gy + 1) * PATCH_SIZE, gx * PATCH_SIZE : (gx + 1) * PATCH_SIZE] = True
        plain = obj.pixel_mask & (~FILL_PATTERNS[obj.shape] | tiles) & ~obj.glyph_mask
        shaded = obj.pixel_mask & FILL_PATTERNS[obj.shape] & ~tiles
        assert np.abs(scene.image[plain].astype(int) - colour).max(initial=0) <= config.color_jitter
        assert np.abs(scene.image[shaded].astype(int) - FILL_SHADE * colour).max(initial=0) <= config.color_jitter + 1
        assert (scene.image[obj.glyph_mask] == GLYPH_RGB).all()
        assert (obj.digit is not None) == (obj.size_class == "large") == obj.glyph_mask.any()
        assert not (obj.glyph_mask & ~obj.pixel_mask).any()
    assert covered.max() <= 1, "objects must not overlap"


def test_questions_are_true_of_their_scene():
    for s in sample_vqa(4, 100):
        objects = s.scene.objects
        words = s.question.split()
        assert set(words) <= set(vocabulary())
        named = [next(o for o in objects if np.array_equal(o.pixel_mask, mask)) for _, mask in s.named]
        for (end, _), obj in zip(s.named, named):
            assert words[end] in (obj.shape, obj.color), "name_end is the last word of the object's name"
        if s.family == "attribute":
            (obj,) = named
            assert s.answer == getattr(obj, s.kind)
            name = {"color": "shape", "shape": "color"}[s.kind]
            assert [getattr(o, name) for o in objects].count(getattr(obj, name)) == 1, "the name is unambiguous"
        elif s.family == "existence":
            color, shape = words[3], words[4]
            present = (color, shape) in {(o.color, o.shape) for o in objects}
            assert s.answer == ("yes" if present else "no") and (s.negative is None) == present
            if s.negative == "adversarial":
                assert color in {o.color for o in objects} and shape in {o.shape for o in objects}
            if not present:
                confusable = [o for o in objects if o.color == color or o.shape == shape]
                assert s.target_pixel_mask.sum() == sum(o.pixel_mask.sum() for o in confusable)
        elif s.family == "glyph":
            (obj,) = named
            assert s.answer == obj.digit and s.size == "large"
        elif s.family == "position":
            first, second = named
            axis = 0 if s.kind in ("left of", "right of") else 1
            delta = first.center[axis] - second.center[axis]
            assert abs(delta) >= WorldConfig().min_offset
            holds = delta < 0 if s.kind in ("left of", "above") else delta > 0
            assert s.answer == ("yes" if holds else "no")
        elif s.family == "choice":
            (obj,) = named
            options = dict(zip(words[-12::3], words[-10::3]))  # "a . red b . blue c . green d . pink"
            assert set(options) == set(LETTERS) and options[s.answer] == obj.color
            assert len(set(options.values())) == len(LETTERS)
            assert [o.shape for o in objects].count(obj.shape) == 1
        if s.named:
            assert np.array_equal(s.target_pixel_mask, np.logical_or.reduce([m for _, m in s.named]))


def test_negative_kinds_and_answers_balanced():
    existence = sample_vqa(0, 300, families=("existence",))
    counts = Counter(s.negative for s in existence)
    assert 110 <= counts[None] <= 190 and all(counts[k] >= 25 for k in ("random", "popular", "adversarial"))
    position = sample_vqa(0, 200, families=("position",))
    assert 70 <= sum(s.answer == "yes" for s in position) <= 130


def test_details_span_several_patches_and_64_tokens_cannot_hold_every_object():
    scene = make_scene(0, 5)
    glyph_patches = [patch_mask(o.glyph_mask, cover=1e-9).sum() for o in scene.objects if o.digit is not None]
    assert glyph_patches and min(glyph_patches) >= 3 and max(glyph_patches) == 4
    object_patches = sum(patch_mask(o.pixel_mask).sum() for o in scene.objects)
    assert object_patches > 64


def test_scene_questions_cover_families_in_order():
    samples = scene_questions(0, 3, FAMILIES, 5)
    assert [s.family for s in samples] == list(FAMILIES)
    assert len({s.question for s in samples}) == 5


def test_score_answer_normalisation():
    sample = sample_vqa(0, 5)[4]  # a choice question
    assert sample.family == "choice"
    letter = sample.answer
    assert score_answer(sample, f"{letter.upper()}.")
    assert score_answer(sample, f"({letter}) because")
    assert not score_answer(sample, "")
    attribute = sample_vqa(0, 1)[0]
    assert score_answer(attribute, f" {attribute.answer.capitalize()}!")
    assert not score_answer(attribute, f"the {attribute.answer}")


def test_vocabulary_has_every_answer_and_template_word():
    words = vocabulary()
    assert len(words) == len(set(words))
    needed = set(COLORS) | set(SHAPES) | set("0123456789") | set(LETTERS) | {"yes", "no"}
    assert needed <= set(words)
    assert all(w in words for t in TEMPLATES.values() for w in t.split() if not w.startswith("{"))


def test_question_family_reads_the_template_a_question_follows():
    samples = sample_vqa(5, 60)
    assert [question_family(s.question) for s in samples] == [s.family for s in samples]
    assert question_family("Is there a  red circle ?") == "existence"
    assert question_family("what animal is this ?") is None
