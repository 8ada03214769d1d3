"""ShapesWorld: a deterministic generator of synthetic VQA scenes with ground-truth masks.

A scene is a textured background with grey clutter (distractors that are no object) and a few
coloured shapes, each with a unique colour and a shape-specific fill pattern, some small (about one patch) and some large.
Questions ask the colour of the object with a given shape (only when that shape is unique in the
scene) or the shape of the object with a given colour (colours are unique), so every question has
exactly one answer and names exactly one object, whose patch mask and size class each sample keeps.

Scene `index` of `seed` is the same whatever else is generated: its random stream is
`numpy.random.default_rng((seed, index))`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IMAGE_SIZE = 96  # pixels per side
PATCH_SIZE = 8  # pixels per patch side
GRID_SIZE = IMAGE_SIZE // PATCH_SIZE  # patches per side: 12
NUM_PATCHES = GRID_SIZE * GRID_SIZE  # 144 patch tokens (+1 [CLS] in the vision tower)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 30),
    "green": (30, 170, 50),
    "cyan": (30, 210, 220),
    "blue": (30, 60, 225),
    "purple": (150, 40, 200),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
SIZE_CLASSES: tuple[str, ...] = ("small", "large")
QUESTION_TYPES: tuple[str, ...] = ("color", "shape")

# The named attribute is always the last word before "?", so it sits at a fixed distance from the
# position where the LLaVA answers (a small LM finds it there much faster than at varying offsets).
COLOR_TEMPLATES = ("what color is the {shape} ?", "what is the color of the {shape} ?")
SHAPE_TEMPLATES = ("which shape is {color} ?", "what is the shape that is {color} ?")
CAPTION_TEMPLATE = "a {color} {shape}"  # one phrase per object, joined with " and "

PIXEL_YS, PIXEL_XS = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]  # (H, W) each, pixel coordinates
RAMP = np.linspace(-1, 1, IMAGE_SIZE)  # (W,)
# Each shape also has a fill pattern, its darker-shade pixels, with a 4 px period aligned to the
# patch grid, so that every patch of an object shows its shape (outlines alone only show at edges).
FILL_SHADE = 0.55  # darker shade = FILL_SHADE * object colour
FILL_PATTERNS: dict[str, np.ndarray] = {  # (H, W) bool, True where the shade is painted
    "square": np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool),  # solid
    "circle": (PIXEL_YS // 2) % 2 == 1,  # horizontal stripes
    "triangle": ((PIXEL_XS + PIXEL_YS) // 2) % 2 == 1,  # diagonal stripes
    "cross": ((PIXEL_XS // 2) + (PIXEL_YS // 2)) % 2 == 1,  # checkerboard
}


def vocabulary() -> list[str]:
    """Every word questions, answers, captions and the LLaVA prompt can contain, in a fixed order."""
    template_words = " ".join(COLOR_TEMPLATES + SHAPE_TEMPLATES + (CAPTION_TEMPLATE, "and"))
    prompt_words = "user : assistant :"
    words = [w for w in f"{template_words} {prompt_words}".split() if not w.startswith("{")]
    words += list(COLORS) + list(SHAPES)
    return list(dict.fromkeys(words))


@dataclass(frozen=True)
class WorldConfig:
    min_objects: int = 3  # objects per scene, inclusive bounds
    max_objects: int = 6  # at most len(COLORS): colours are unique within a scene
    small_radius: tuple[int, int] = (5, 6)  # px, inclusive; a small object spans ~1-4 patches
    large_radius: tuple[int, int] = (11, 15)  # px, inclusive; a large object spans ~9-16 patches
    large_share: float = 0.5  # probability that an object is large
    min_gap: int = 2  # px between object bounding circles
    color_jitter: int = 12  # +- per channel on object colours
    num_clutter: tuple[int, int] = (2, 5)  # grey distractor specks per scene, inclusive
    patch_cover: float = 0.25  # share of a patch's pixels an object needs to count in its patch mask

    def __post_init__(self):
        assert 1 <= self.min_objects <= self.max_objects <= len(COLORS), (
            f"objects per scene must be in 1..{len(COLORS)} (one colour each), got "
            f"{self.min_objects}..{self.max_objects}"
        )


@dataclass
class SceneObject:
    color: str
    shape: str
    size_class: str  # "small" or "large"
    center: tuple[int, int]  # (x, y) px
    radius: int  # px
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1) px, x1/y1 exclusive
    pixel_mask: np.ndarray  # (IMAGE_SIZE, IMAGE_SIZE) bool
    patch_mask: np.ndarray  # (GRID_SIZE, GRID_SIZE) bool
    patch_cover: np.ndarray  # (GRID_SIZE, GRID_SIZE) float, share of each patch it covers

    @property
    def phrase(self) -> str:
        return CAPTION_TEMPLATE.format(color=self.color, shape=self.shape)


@dataclass
class Scene:
    seed: int
    index: int
    image: np.ndarray  # (IMAGE_SIZE, IMAGE_SIZE, 3) uint8
    objects: list[SceneObject]
    object_map: np.ndarray  # (IMAGE_SIZE, IMAGE_SIZE) int8, object index per pixel, -1 = background

    @property
    def caption(self) -> str:
        return " and ".join(obj.phrase for obj in self.objects)

    def patch_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-patch (colour id, shape id), -1 where no object covers `patch_cover` of the patch.

        Returns two (NUM_PATCHES,) int64 arrays in raster order, the order of the vision tokens.
        """
        color_ids = np.full((GRID_SIZE, GRID_SIZE), -1, dtype=np.int64)
        shape_ids = np.full((GRID_SIZE, GRID_SIZE), -1, dtype=np.int64)
        best_cover = np.zeros((GRID_SIZE, GRID_SIZE))
        for obj in self.objects:
            wins = obj.patch_mask & (obj.patch_cover > best_cover)
            color_ids[wins] = list(COLORS).index(obj.color)
            shape_ids[wins] = SHAPES.index(obj.shape)
            best_cover = np.where(wins, obj.patch_cover, best_cover)
        return color_ids.reshape(-1), shape_ids.reshape(-1)


@dataclass
class VQASample:
    image: np.ndarray  # (IMAGE_SIZE, IMAGE_SIZE, 3) uint8
    question: str
    answer: str  # one word of the vocabulary
    question_type: str  # "color" or "shape"
    target_phrase: str  # the asked-about object as "a <color> <shape>"
    target_patch_mask: np.ndarray  # (GRID_SIZE, GRID_SIZE) bool, the asked-about object's patches
    target_pixel_mask: np.ndarray  # (IMAGE_SIZE, IMAGE_SIZE) bool
    size_class: str  # "small" or "large", of the asked-about object
    scene: Scene = field(repr=False)


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, radius: int) -> np.ndarray:
    """Pixels of `shape` at offsets (dx, dy) from its centre; the shape fits in the radius circle."""
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        half = 0.8 * radius
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":  # upward, apex at the top, base at 0.8 * radius below the centre
        base_y = 0.8 * radius
        height = base_y + radius
        half_width_at_y = (dy + radius) / height * radius  # widens linearly from apex to base
        return (dy >= -radius) & (dy <= base_y) & (np.abs(dx) <= half_width_at_y)
    if shape == "cross":
        arm = max(1.6, 0.35 * radius)
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))
    raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}")


def textured_background(rng: np.random.Generator) -> np.ndarray:
    """A dull, low-saturation gradient with pixel noise and faint stripes: (H, W, 3) float."""
    base = rng.uniform(90, 170) + rng.uniform(-12, 12, size=3)  # greyish, slightly tinted
    gradient = rng.uniform(-25, 25) * RAMP[None, :] + rng.uniform(-25, 25) * RAMP[:, None]  # (H, W)
    period = rng.uniform(6, 20)
    angle = rng.uniform(0, np.pi)
    phase = (PIXEL_XS * np.cos(angle) + PIXEL_YS * np.sin(angle)) * (2 * np.pi / period)  # (H, W)
    noise = rng.standard_normal(size=(IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32) * 6
    return base + (gradient + 8 * np.sin(phase) + noise)[..., None]


def add_clutter(image: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Paints `count` grey elliptic specks (distractors that are no object) onto `image` in place."""
    for _ in range(count):
        cx, cy = rng.uniform(0, IMAGE_SIZE, size=2)
        rx, ry = rng.uniform(1.5, 5, size=2)
        grey = rng.uniform(40, 220)
        x0, x1 = max(int(cx - rx), 0), min(int(cx + rx) + 2, IMAGE_SIZE)
        y0, y1 = max(int(cy - ry), 0), min(int(cy + ry) + 2, IMAGE_SIZE)
        dy, dx = np.mgrid[y0:y1, x0:x1] - np.array([cy, cx])[:, None, None]  # offsets, (2, h, w)
        image[y0:y1, x0:x1][(dx / rx) ** 2 + (dy / ry) ** 2 <= 1] = grey


def place_objects(rng: np.random.Generator, config: WorldConfig) -> list[tuple[int, int, int, str]]:
    """Non-overlapping (x, y, radius, size_class) placements; objects that do not fit are skipped."""
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    placed: list[tuple[int, int, int, str]] = []
    for _ in range(count):
        size_class = "large" if rng.random() < config.large_share else "small"
        low, high = config.large_radius if size_class == "large" else config.small_radius
        radius = int(rng.integers(low, high + 1))
        for _attempt in range(30):
            x, y = rng.integers(radius, IMAGE_SIZE - radius, size=2)
            if all((x - px) ** 2 + (y - py) ** 2 >= (radius + pr + config.min_gap) ** 2 for px, py, pr, _ in placed):
                placed.append((int(x), int(y), radius, size_class))
                break
    return placed


def patch_coverage(pixel_mask: np.ndarray) -> np.ndarray:
    """Share of each patch's pixels set in `pixel_mask`: (H, W) bool -> (GRID, GRID) float."""
    blocks = pixel_mask.reshape(GRID_SIZE, PATCH_SIZE, GRID_SIZE, PATCH_SIZE)  # (gy, py, gx, px)
    return blocks.mean(axis=(1, 3))


def make_scene(seed: int, index: int, config: WorldConfig = WorldConfig()) -> Scene:
    """Scene `index` of the stream `seed`: deterministic, independent of any other scene."""
    rng = np.random.default_rng((seed, index))
    canvas = textured_background(rng)
    add_clutter(canvas, rng, int(rng.integers(config.num_clutter[0], config.num_clutter[1] + 1)))
    object_map = np.full((IMAGE_SIZE, IMAGE_SIZE), -1, dtype=np.int8)
    placements = place_objects(rng, config)
    colors = rng.choice(list(COLORS), size=len(placements), replace=False)
    shapes = rng.choice(SHAPES, size=len(placements))
    objects = []
    for (x, y, radius, size_class), color, shape in zip(placements, colors, shapes):
        x0, y0 = max(x - radius, 0), max(y - radius, 0)
        x1, y1 = min(x + radius + 1, IMAGE_SIZE), min(y + radius + 1, IMAGE_SIZE)
        dy, dx = np.mgrid[y0 - y : y1 - y, x0 - x : x1 - x]  # offsets from the centre, (h, w)
        local = shape_mask(str(shape), dx, dy, radius)
        pixel_mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        pixel_mask[y0:y1, x0:x1] = local
        rgb = np.array(COLORS[str(color)]) + rng.integers(-config.color_jitter, config.color_jitter + 1, size=3)
        canvas[pixel_mask] = rgb
        canvas[pixel_mask & FILL_PATTERNS[str(shape)]] = FILL_SHADE * rgb
        object_map[pixel_mask] = len(objects)
        cover = patch_coverage(pixel_mask)
        patch_mask = cover >= config.patch_cover
        patch_mask[np.unravel_index(np.argmax(cover), cover.shape)] = True  # never empty
        ys, xs = np.nonzero(pixel_mask)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        objects.append(
            SceneObject(str(color), str(shape), size_class, (x, y), radius, bbox, pixel_mask, patch_mask, cover)
        )
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    return Scene(seed, index, image, objects, object_map)


def questions_for(scene: Scene) -> list[tuple[int, str, str, str]]:
    """Every unambiguous (object index, question type, question, answer) of a scene, all templates."""
    shape_counts = {shape: sum(o.shape == shape for o in scene.objects) for shape in SHAPES}
    found = []
    for i, obj in enumerate(scene.objects):
        for template in SHAPE_TEMPLATES:
            found.append((i, "shape", template.format(color=obj.color), obj.shape))
        if shape_counts[obj.shape] == 1:
            for template in COLOR_TEMPLATES:
                found.append((i, "color", template.format(shape=obj.shape), obj.color))
    return found


def ask(scene: Scene, rng: np.random.Generator) -> VQASample:
    """One question about a scene: size class first (50/50 when both exist), then type, then object."""
    candidates = questions_for(scene)
    sizes = sorted({scene.objects[c[0]].size_class for c in candidates})
    size_class = sizes[int(rng.integers(len(sizes)))]
    candidates = [c for c in candidates if scene.objects[c[0]].size_class == size_class]
    types = sorted({c[1] for c in candidates})
    question_type = types[int(rng.integers(len(types)))]
    candidates = [c for c in candidates if c[1] == question_type]
    index, question_type, question, answer = candidates[int(rng.integers(len(candidates)))]
    obj = scene.objects[index]
    return VQASample(
        scene.image, question, answer, question_type, obj.phrase, obj.patch_mask, obj.pixel_mask, obj.size_class, scene
    )


def sample_vqa(seed: int, n: int, config: WorldConfig = WorldConfig(), start: int = 0) -> list[VQASample]:
    """`n` question/answer samples, one per scene, scenes `start .. start + n - 1` of stream `seed`."""
    samples = []
    for index in range(start, start + n):
        scene = make_scene(seed, index, config)
        samples.append(ask(scene, np.random.default_rng((seed, index, 1))))
    return samples
