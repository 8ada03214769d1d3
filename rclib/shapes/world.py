"""ShapesWorld: a deterministic generator of cluttered synthetic VQA scenes with ground-truth masks.

LLaVA-1.5's geometry: a 24 x 24 patch grid, 576 visual tokens (96 px images, 4 px patches).
A scene is a textured background with grey specks (clutter that is no object) and 8-14 objects,
each a distinct (colour, shape) pair (8 colours x 5 shapes, one shape used once); each shape is filled with its own
pattern in a darker shade (square solid, circle striped, triangle diagonal, diamond dotted, cross
checked: every patch of an object shows its shape, as outlines alone do not train in time); large
objects also carry a black digit (a 3 x 4 px font on a plain tile) in each of the 4 patches they
cover fully nearest their centre: a fine detail that lives in a few specific patches. Many objects share a colour or a shape with the asked-about one.

Question families (`FAMILIES`), about objects named by their colour and shape, or by the one that
is unique in the scene:
- `attribute`: the colour of the only object of a shape, or the shape of the only object of a
  colour (one word, VQAv2-like);
- `existence`: "is there a red circle ?" yes / no; negatives are `random` (any absent pair),
  `popular` (an absent pair whose shape is the scene's most frequent one) or `adversarial` (an
  absent pair whose colour and shape both appear in the scene, on different objects) (POPE-like);
- `glyph`: the digit on a named large object (TextVQA-like);
- `position`: is object A left of / right of / above / below object B, yes / no (MME-like);
- `choice`: the colour of the only object of a shape among four lettered options, answer a letter
  (MMBench-like).

Scene `index` of `seed` is the same whatever else is generated: its random stream is
`numpy.random.default_rng((seed, index))`, its questions' `default_rng((seed, index, 1 + k))`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

import numpy as np

IMAGE_SIZE = 96  # pixels per side
PATCH_SIZE = 4  # pixels per patch side
GRID_SIZE = IMAGE_SIZE // PATCH_SIZE  # patches per side: 24, as LLaVA-1.5 (336 px / 14 px)
NUM_PATCHES = GRID_SIZE * GRID_SIZE  # 576 patch tokens (+1 [CLS] in the vision tower)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 30),
    "green": (30, 170, 50),
    "cyan": (30, 210, 220),
    "blue": (30, 60, 225),
    "purple": (150, 40, 200),
    "pink": (250, 135, 200),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "diamond", "cross")
DIGITS: tuple[str, ...] = tuple(string.digits)
SIZE_CLASSES: tuple[str, ...] = ("small", "large")
FAMILIES: tuple[str, ...] = ("attribute", "existence", "glyph", "position", "choice")
NEGATIVE_KINDS: tuple[str, ...] = ("random", "popular", "adversarial")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
LETTERS: tuple[str, ...] = ("a", "b", "c", "d")  # choice options, one per letter

# Templates: the name always ends just before "?" (or "one ?"), then come the options.
TEMPLATES: dict[str, str] = {
    "color": "what color is the {shape} ?",
    "shape": "what shape is the {color} one ?",
    "existence": "is there a {color} {shape} ?",
    "glyph": "what number is on the {color} {shape} ?",
    "position": "is the {first} {relation} the {second} ?",
    "choice": "what color is the {shape} ? a . {a} b . {b} c . {c} d . {d}",
}
CAPTION_TEMPLATE = "a {color} {shape}"  # one phrase per object, joined with " and "
ANSWER_WORDS = ("yes", "no")

PIXEL_YS, PIXEL_XS = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]  # (H, W) each, pixel coordinates
RAMP = np.linspace(-1, 1, IMAGE_SIZE)  # (W,)
# Fill patterns, one per shape: the darker-shade pixels, period 4 px aligned to the patch grid, so
# every patch of an object shows its shape.
FILL_SHADE = 0.5  # darker shade = FILL_SHADE * object colour
FILL_PATTERNS: dict[str, np.ndarray] = {  # shape -> (H, W) bool, True where the shade is painted
    "square": np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool),  # solid
    "circle": (PIXEL_YS // 2) % 2 == 1,  # horizontal stripes, 2 px
    "triangle": ((PIXEL_XS + PIXEL_YS) // 2) % 2 == 1,  # diagonal stripes
    "diamond": (PIXEL_XS % 4 < 2) & (PIXEL_YS % 4 < 2),  # one 2 x 2 dot per patch
    "cross": ((PIXEL_XS // 2) + (PIXEL_YS // 2)) % 2 == 1,  # 2 px checkerboard
}
GLYPH_RGB = (15, 15, 15)
GLYPH_TILES = 4  # patches a digit is drawn in (the fully covered ones nearest the centre)
FONT: dict[str, tuple[str, ...]] = {  # 3 x 4 bitmaps, "#" = ink; drawn at a patch's top-left corner
    "0": ("###", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", "###"),
    "2": ("##.", "..#", ".#.", "###"),
    "3": ("###", ".##", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#"),
    "5": ("###", "##.", "..#", "##."),
    "6": ("#..", "###", "#.#", "###"),
    "7": ("###", "..#", ".#.", ".#."),
    "8": ("###", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#"),
}
GLYPHS = {d: np.array([[c == "#" for c in row] for row in rows]) for d, rows in FONT.items()}  # digit -> (4, 3) bool


TEMPLATE_FAMILY = {"color": "attribute", "shape": "attribute"}  # template -> family, where the names differ
TEMPLATE_PATTERNS = {  # template -> its questions as a regular expression (a slot: one or more words)
    kind: re.compile("^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)) + "$") for kind, template in TEMPLATES.items()
}


def question_family(question: str) -> str | None:
    """The family (see `FAMILIES`) whose template ``question`` follows, None when it follows none (spaces
    collapsed, case ignored): "is there a red circle ?" -> "existence"."""
    words = " ".join(question.lower().split())
    for kind, pattern in TEMPLATE_PATTERNS.items():
        if pattern.match(words):
            return TEMPLATE_FAMILY.get(kind, kind)
    return None


def vocabulary() -> list[str]:
    """Every word questions, answers, captions and the LLaVA prompt can contain, in a fixed order."""
    template_words = " ".join(list(TEMPLATES.values()) + [CAPTION_TEMPLATE, "and", "user : assistant :"])
    words = [w for w in template_words.split() if not w.startswith("{")]
    words += list(COLORS) + list(SHAPES) + list(DIGITS) + list(LETTERS) + list(ANSWER_WORDS)
    words += " ".join(RELATIONS).split()
    return list(dict.fromkeys(words))


@dataclass(frozen=True)
class WorldConfig:
    min_objects: int = 8  # objects per scene, inclusive bounds (fewer when they do not fit)
    max_objects: int = 14  # at most len(COLORS) * len(SHAPES): (colour, shape) pairs are unique
    small_radius: tuple[int, int] = (4, 6)  # px, inclusive; a small object spans ~2-9 patches
    large_radius: tuple[int, int] = (10, 13)  # px, inclusive; a large object spans ~20-45 patches (room for a digit)
    large_share: float = 0.45  # probability that an object is large (and carries a digit)
    min_gap: int = 2  # px between object bounding circles
    color_jitter: int = 12  # +- per channel on object colours
    num_clutter: tuple[int, int] = (6, 14)  # grey specks per scene, inclusive
    patch_cover: float = 0.25  # share of a patch's pixels an object needs to count in its patch mask
    min_offset: int = 12  # px between two objects' centres along the axis a position question asks

    def __post_init__(self):
        pairs = len(COLORS) * len(SHAPES)
        if not 1 <= self.min_objects <= self.max_objects <= pairs:
            raise ValueError(f"objects per scene must be in 1..{pairs} (one (colour, shape) pair each), got "
                             f"{self.min_objects}..{self.max_objects}")


@dataclass
class SceneObject:
    color: str
    shape: str
    digit: str | None  # the digit drawn on a large object, None on a small one
    size_class: str  # "small" or "large"
    center: tuple[int, int]  # (x, y) px
    radius: int  # px
    pixel_mask: np.ndarray  # (IMAGE_SIZE, IMAGE_SIZE) bool, digit pixels included
    glyph_mask: np.ndarray  # (IMAGE_SIZE, IMAGE_SIZE) bool, the digit's ink (empty without a digit)

    @property
    def phrase(self) -> str:
        return CAPTION_TEMPLATE.format(color=self.color, shape=self.shape)


@dataclass
class Scene:
    seed: int
    index: int
    image: np.ndarray  # (IMAGE_SIZE, IMAGE_SIZE, 3) uint8
    objects: list[SceneObject]

    @property
    def caption(self) -> str:
        return " and ".join(obj.phrase for obj in self.objects)


@dataclass
class VQASample:
    image: np.ndarray  # (IMAGE_SIZE, IMAGE_SIZE, 3) uint8
    question: str  # exactly what the LLM is asked
    answer: str  # canonical short answer: one word (choice: a letter)
    family: str  # one of FAMILIES
    kind: str  # attribute: "color" / "shape" (the attribute asked); position: the relation; else the family
    target_pixel_mask: np.ndarray  # (H, W) bool: the named object(s); negative existence: the confusable
    # distractors (objects sharing the asked colour or shape), empty if none
    size: str  # "small" / "large" of the (first) named object; negative existence: "small"
    negative: str | None  # existence only: "random" / "popular" / "adversarial" for a "no", else None
    named: list[tuple[int, np.ndarray]]  # per named object: (index of its name's last word in
    # question.split(), its (H, W) pixel mask); empty for a negative existence question
    scene: Scene = field(repr=False)


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, radius: int) -> np.ndarray:
    """Pixels of `shape` at offsets (dx, dy) from its centre; the shape fits in the radius circle."""
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        half = 0.8 * radius
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= radius
    if shape == "triangle":  # upward, apex at the top, base 0.6 * radius below the centre, 1.6 * radius wide
        base_y = 0.6 * radius  # base corners at (+-0.8, 0.6) * radius: on the circle
        half_width_at_y = (dy + radius) / (base_y + radius) * 0.8 * radius  # widens linearly from apex to base
        return (dy >= -radius) & (dy <= base_y) & (np.abs(dx) <= half_width_at_y)
    if shape == "cross":
        arm = max(1.6, 0.45 * radius)
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
        rx, ry = rng.uniform(1.5, 4, size=2)
        grey = rng.uniform(40, 220)
        x0, x1 = max(int(cx - rx), 0), min(int(cx + rx) + 2, IMAGE_SIZE)
        y0, y1 = max(int(cy - ry), 0), min(int(cy + ry) + 2, IMAGE_SIZE)
        dy, dx = np.mgrid[y0:y1, x0:x1] - np.array([cy, cx])[:, None, None]  # offsets, (2, h, w)
        image[y0:y1, x0:x1][(dx / rx) ** 2 + (dy / ry) ** 2 <= 1] = grey


def place_objects(rng: np.random.Generator, config: WorldConfig) -> list[tuple[int, int, int, str]]:
    """Non-overlapping (x, y, radius, size_class) placements, large first; those that do not fit are skipped."""
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    sizes = sorted(("large" if rng.random() < config.large_share else "small" for _ in range(count)), key=SIZE_CLASSES.index, reverse=True)
    placed: list[tuple[int, int, int, str]] = []
    for size_class in sizes:
        low, high = config.large_radius if size_class == "large" else config.small_radius
        radius = int(rng.integers(low, high + 1))
        for _attempt in range(40):
            x, y = rng.integers(radius, IMAGE_SIZE - radius, size=2)
            if all((x - px) ** 2 + (y - py) ** 2 >= (radius + pr + config.min_gap) ** 2 for px, py, pr, _ in placed):
                placed.append((int(x), int(y), radius, size_class))
                break
    return placed


def patch_coverage(pixel_mask: np.ndarray) -> np.ndarray:
    """Share of each patch's pixels set in `pixel_mask`: (H, W) bool -> (GRID, GRID) float."""
    blocks = pixel_mask.reshape(GRID_SIZE, PATCH_SIZE, GRID_SIZE, PATCH_SIZE)  # (gy, py, gx, px)
    return blocks.mean(axis=(1, 3))


def patch_mask(pixel_mask: np.ndarray, cover: float = WorldConfig.patch_cover) -> np.ndarray:
    """(H, W) bool -> (GRID, GRID) bool: patches with at least `cover` of their pixels set; a non-empty
    pixel mask always keeps its best-covered patch."""
    coverage = patch_coverage(pixel_mask)
    mask = coverage >= cover
    if pixel_mask.any():
        mask[np.unravel_index(np.argmax(coverage), coverage.shape)] = True
    return mask


def glyph_tiles(pixel_mask: np.ndarray, center: tuple[int, int]) -> list[tuple[int, int]]:
    """(row, column) of the GLYPH_TILES patches an object covers fully that lie nearest its centre."""
    full = np.argwhere(patch_coverage(pixel_mask) == 1)  # (n, 2) grid (row, column)
    middle = (full + 0.5) * PATCH_SIZE  # patch centres, px
    distance = (middle[:, 0] - center[1]) ** 2 + (middle[:, 1] - center[0]) ** 2
    return [tuple(int(v) for v in full[i]) for i in np.argsort(distance, kind="stable")[:GLYPH_TILES]]


def make_scene(seed: int, index: int, config: WorldConfig = WorldConfig()) -> Scene:
    """Scene `index` of the stream `seed`: deterministic, independent of any other scene."""
    rng = np.random.default_rng((seed, index))
    canvas = textured_background(rng)
    add_clutter(canvas, rng, int(rng.integers(config.num_clutter[0], config.num_clutter[1] + 1)))
    placements = place_objects(rng, config)
    # distinct (colour, shape) pairs, one shape used exactly once (so every scene has a unique shape)
    rare = int(rng.integers(len(SHAPES)))
    others = [p for p in rng.permutation(len(COLORS) * len(SHAPES)) if p % len(SHAPES) != rare]
    pairs = others[: len(placements) - 1]
    pairs.insert(int(rng.integers(len(placements))), int(rng.integers(len(COLORS))) * len(SHAPES) + rare)
    objects = []
    for (x, y, radius, size_class), pair in zip(placements, pairs):
        color, shape = list(COLORS)[pair // len(SHAPES)], SHAPES[pair % len(SHAPES)]
        x0, y0 = max(x - radius, 0), max(y - radius, 0)
        x1, y1 = min(x + radius + 1, IMAGE_SIZE), min(y + radius + 1, IMAGE_SIZE)
        dy, dx = np.mgrid[y0 - y : y1 - y, x0 - x : x1 - x]  # offsets from the centre, (h, w)
        pixel_mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        pixel_mask[y0:y1, x0:x1] = shape_mask(shape, dx, dy, radius)
        rgb = np.array(COLORS[color]) + rng.integers(-config.color_jitter, config.color_jitter + 1, size=3)
        canvas[pixel_mask] = rgb
        canvas[pixel_mask & FILL_PATTERNS[shape]] = FILL_SHADE * rgb
        glyph_mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        digit = None
        if size_class == "large":
            digit = DIGITS[int(rng.integers(len(DIGITS)))]
            for gy, gx in glyph_tiles(pixel_mask, (x, y)):
                top, left = gy * PATCH_SIZE, gx * PATCH_SIZE
                canvas[top : top + PATCH_SIZE, left : left + PATCH_SIZE] = rgb  # a plain tile behind the ink
                glyph_mask[top : top + 4, left : left + 3] = GLYPHS[digit]
            canvas[glyph_mask] = GLYPH_RGB
        objects.append(SceneObject(color, shape, digit, size_class, (x, y), radius, pixel_mask, glyph_mask))
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    return Scene(seed, index, image, objects)


def unique_by(objects: list[SceneObject], attribute: str) -> list[int]:
    """Indices of objects whose `attribute` ("color" or "shape") no other object of the scene shares."""
    values = [getattr(o, attribute) for o in objects]
    return [i for i, value in enumerate(values) if values.count(value) == 1]


def pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def sample(scene: Scene, family: str, question: str, answer: str, kind: str, named: list[int],
           name_ends: list[int], mask: np.ndarray | None = None, negative: str | None = None) -> VQASample:
    """A VQASample whose target is the union of the named objects' pixels (or `mask` when given)."""
    objects = [scene.objects[i] for i in named]
    if mask is None:
        mask = np.logical_or.reduce([o.pixel_mask for o in objects])
    size = objects[0].size_class if objects else "small"
    return VQASample(scene.image, question, answer, family, kind, mask, size, negative,
                     [(end, o.pixel_mask) for end, o in zip(name_ends, objects)], scene)


def ask_attribute(scene: Scene, rng: np.random.Generator) -> VQASample | None:
    """The colour of the only object of a shape, or the shape of the only object of a colour."""
    by_kind = {"color": unique_by(scene.objects, "shape"), "shape": unique_by(scene.objects, "color")}
    kinds = [k for k, candidates in by_kind.items() if candidates]
    if not kinds:
        return None
    kind = pick(rng, kinds)
    i = pick(rng, by_kind[kind])
    obj = scene.objects[i]
    question = TEMPLATES[kind].format(color=obj.color, shape=obj.shape)
    end = question.split().index("?") - 1 - (kind == "shape")  # "... the {colour} one ?"
    return sample(scene, "attribute", question, getattr(obj, kind), kind, [i], [end])


def ask_existence(scene: Scene, rng: np.random.Generator) -> VQASample | None:
    """Yes half the time; a no is random, popular or adversarial with equal chance (POPE's three splits)."""
    question_end = TEMPLATES["existence"].split().index("?") - 1
    if rng.random() < 0.5:
        i = int(rng.integers(len(scene.objects)))
        obj = scene.objects[i]
        return sample(scene, "existence", TEMPLATES["existence"].format(color=obj.color, shape=obj.shape), "yes",
                      "existence", [i], [question_end])
    present = {(o.color, o.shape) for o in scene.objects}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    colors, shapes = {o.color for o in scene.objects}, [o.shape for o in scene.objects]
    most = max(shapes.count(s) for s in SHAPES)
    candidates = {
        "random": absent,
        "popular": [(c, s) for c, s in absent if shapes.count(s) == most],
        "adversarial": [(c, s) for c, s in absent if c in colors and s in shapes],
    }
    negative = pick(rng, [k for k in NEGATIVE_KINDS if candidates[k]])
    color, shape = pick(rng, candidates[negative])
    confusable = [o.pixel_mask for o in scene.objects if o.color == color or o.shape == shape]
    mask = np.logical_or.reduce(confusable) if confusable else np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    return sample(scene, "existence", TEMPLATES["existence"].format(color=color, shape=shape), "no", "existence",
                  [], [], mask=mask, negative=negative)


def ask_glyph(scene: Scene, rng: np.random.Generator) -> VQASample | None:
    large = [i for i, o in enumerate(scene.objects) if o.digit is not None]
    if not large:
        return None
    i = pick(rng, large)
    obj = scene.objects[i]
    question = TEMPLATES["glyph"].format(color=obj.color, shape=obj.shape)
    return sample(scene, "glyph", question, obj.digit, "glyph", [i], [question.split().index("?") - 1])


def ask_position(scene: Scene, rng: np.random.Generator, min_offset: int) -> VQASample | None:
    """Yes or no with equal chance, about two objects at least `min_offset` px apart along the asked axis."""
    relation = pick(rng, list(RELATIONS))
    axis = 0 if relation in ("left of", "right of") else 1
    sign = -1 if relation in ("left of", "above") else 1  # "yes" when first - second has this sign
    want_yes = rng.random() < 0.5
    pairs = [(i, j) for i, a in enumerate(scene.objects) for j, b in enumerate(scene.objects)
             if abs(a.center[axis] - b.center[axis]) >= min_offset
             and (sign * (a.center[axis] - b.center[axis]) > 0) == want_yes]
    if not pairs:
        return None
    i, j = pick(rng, pairs)
    a, b = scene.objects[i], scene.objects[j]
    question = TEMPLATES["position"].format(first=f"{a.color} {a.shape}", relation=relation, second=f"{b.color} {b.shape}")
    words = question.split()
    first_end = 3  # "is the {colour} {shape}"
    return sample(scene, "position", question, "yes" if want_yes else "no", relation, [i, j],
                  [first_end, words.index("?") - 1])


def ask_choice(scene: Scene, rng: np.random.Generator) -> VQASample | None:
    """The colour of the only object of a shape, among four colours (the others from the scene first)."""
    candidates = unique_by(scene.objects, "shape")
    if not candidates:
        return None
    i = pick(rng, candidates)
    obj = scene.objects[i]
    others = list(dict.fromkeys(o.color for o in scene.objects if o.color != obj.color))
    others += [c for c in COLORS if c != obj.color and c not in others]
    options = [obj.color] + [str(c) for c in rng.permutation(others[:6])[: len(LETTERS) - 1]]
    options = [options[k] for k in rng.permutation(len(LETTERS))]
    question = TEMPLATES["choice"].format(shape=obj.shape, **dict(zip(LETTERS, options)))
    answer = LETTERS[options.index(obj.color)]
    return sample(scene, "choice", question, answer, "choice", [i], [question.split().index("?") - 1])


def ask(scene: Scene, family: str, rng: np.random.Generator, config: WorldConfig = WorldConfig()) -> VQASample | None:
    """One question of `family` about `scene`, or None when the scene has no object to ask it about."""
    if family == "attribute":
        return ask_attribute(scene, rng)
    if family == "existence":
        return ask_existence(scene, rng)
    if family == "glyph":
        return ask_glyph(scene, rng)
    if family == "position":
        return ask_position(scene, rng, config.min_offset)
    if family == "choice":
        return ask_choice(scene, rng)
    raise ValueError(f"unknown question family {family!r}; use some of {FAMILIES}")


def check_families(families) -> tuple[str, ...]:
    families = FAMILIES if families is None else tuple(families)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"unknown question families {unknown}; pass a non-empty subset of {FAMILIES}")
    return families


def scene_questions(seed: int, index: int, families, per_scene: int, config: WorldConfig = WorldConfig(),
                    family_offset: int = 0) -> list[VQASample]:
    """`per_scene` questions about scene `index`, families round-robin from `family_offset`; a family a
    scene cannot be asked (no large object, no distinct pair) is replaced by the next one."""
    families = check_families(families)
    scene = make_scene(seed, index, config)
    samples = []
    for k in range(per_scene):
        rng = np.random.default_rng((seed, index, 1 + k))
        for shift in range(len(families)):
            asked = ask(scene, families[(family_offset + k + shift) % len(families)], rng, config)
            if asked is not None:
                samples.append(asked)
                break
    return samples


def sample_vqa(seed: int, n: int, families=None, config: WorldConfig = WorldConfig(), start: int = 0) -> list[VQASample]:
    """`n` samples, one per scene, scenes `start .. start + n - 1` of stream `seed`; families round-robin
    over `families` (default all) by scene index, so any `n` consecutive scenes are balanced."""
    families = check_families(families)
    return [scene_questions(seed, index, families, 1, config, family_offset=index % len(families))[0]
            for index in range(start, start + n)]


def normalize_answer(text: str) -> str:
    """The first word of `text`, lower case, punctuation stripped ("" when there is none)."""
    words = text.lower().translate(str.maketrans(string.punctuation, " " * len(string.punctuation))).split()
    return words[0] if words else ""


def score_answer(sample: VQASample, text: str) -> bool:
    """Whether the generated `text` answers `sample`: its first word (a choice's letter) is the answer."""
    return normalize_answer(text) == sample.answer
