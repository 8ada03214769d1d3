import numpy as np
import pytest

from rclib.shapes.world import (
    COLORS,
    FILL_PATTERNS,
    FILL_SHADE,
    GRID_SIZE,
    IMAGE_SIZE,
    NUM_PATCHES,
    PATCH_SIZE,
    SHAPES,
    WorldConfig,
    make_scene,
    questions_for,
    sample_vqa,
    vocabulary,
)


def test_grid_constants():
    assert GRID_SIZE * PATCH_SIZE == IMAGE_SIZE
    assert NUM_PATCHES == GRID_SIZE**2 >= 144


def test_same_seed_same_scene_and_independent_of_count():
    a = sample_vqa(7, 5)
    b = sample_vqa(7, 8)
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image)
        assert (x.question, x.answer, x.size_class) == (y.question, y.answer, y.size_class)
    assert np.array_equal(sample_vqa(7, 3, start=2)[0].image, a[2].image)


def test_different_seeds_differ():
    assert not np.array_equal(make_scene(0, 0).image, make_scene(1, 0).image)


@pytest.mark.parametrize("index", range(20))
def test_masks_consistent_with_image(index):
    scene = make_scene(3, index)
    assert scene.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and scene.image.dtype == np.uint8
    assert WorldConfig().min_objects <= len(scene.objects) <= WorldConfig().max_objects
    for i, obj in enumerate(scene.objects):
        assert obj.pixel_mask.any()
        assert np.array_equal(scene.object_map == i, obj.pixel_mask), "objects must not overlap"
        # every object pixel shows the object's colour or its pattern shade (up to the jitter)
        colour = np.array(COLORS[obj.color])
        shaded = obj.pixel_mask & FILL_PATTERNS[obj.shape]
        jitter = WorldConfig().color_jitter
        assert np.abs(scene.image[obj.pixel_mask & ~shaded].astype(int) - colour).max(initial=0) <= jitter
        assert np.abs(scene.image[shaded].astype(int) - FILL_SHADE * colour).max(initial=0) <= jitter
        x0, y0, x1, y1 = obj.bbox
        assert obj.pixel_mask[y0:y1, x0:x1].sum() == obj.pixel_mask.sum()
        # the patch mask holds the patches the object covers
        assert obj.patch_mask.shape == (GRID_SIZE, GRID_SIZE) and obj.patch_mask.any()
        gy, gx = np.nonzero(obj.patch_mask)
        for y, x in zip(gy, gx):
            assert obj.pixel_mask[y * PATCH_SIZE : (y + 1) * PATCH_SIZE, x * PATCH_SIZE : (x + 1) * PATCH_SIZE].any()


def test_colours_unique_and_questions_unambiguous():
    for index in range(50):
        scene = make_scene(0, index)
        colors = [o.color for o in scene.objects]
        assert len(set(colors)) == len(colors)
        for i, qtype, question, answer in questions_for(scene):
            obj = scene.objects[i]
            if qtype == "color":
                assert [o.shape for o in scene.objects].count(obj.shape) == 1 and answer == obj.color
                assert obj.shape in question
            else:
                assert answer == obj.shape and obj.color in question


def test_samples_cover_both_sizes_and_types_and_vocab():
    samples = sample_vqa(0, 300)
    words = set(vocabulary())
    assert {s.size_class for s in samples} == {"small", "large"}
    assert {s.question_type for s in samples} == {"color", "shape"}
    for s in samples:
        assert set(s.question.split()) <= words and s.answer in set(COLORS) | set(SHAPES)
        assert s.target_patch_mask.any() and s.target_pixel_mask.any()
    small = np.mean([s.target_patch_mask.sum() for s in samples if s.size_class == "small"])
    large = np.mean([s.target_patch_mask.sum() for s in samples if s.size_class == "large"])
    assert small < 4 < large, "small objects should span about one patch, large ones many"


def test_patch_labels_match_masks():
    scene = make_scene(2, 4)
    colors, shapes = scene.patch_labels()
    assert colors.shape == shapes.shape == (NUM_PATCHES,)
    on_object = np.zeros(NUM_PATCHES, dtype=bool)
    for obj in scene.objects:
        on_object |= obj.patch_mask.reshape(-1)
    assert np.array_equal(colors >= 0, on_object)
