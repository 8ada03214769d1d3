"""The example images and questions the notebooks, the explorer and the CLI's demo start from.

ShapesWorld scenes come with their true answer (the embedded model was trained on that world); the
bundled photographs (``data/images``, listed with their questions in ``questions.json``) have none.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from rclib.methods import METHODS
from rclib.models.llava import Encoded

SAMPLE_IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"
EXAMPLE_SEED = 7  # ShapesWorld stream of the example scenes (the shipped models train on other seeds)
# The methods that run on an example: those needing nothing beyond the encoders' outputs (not the oracle,
# which needs the true mask of the asked-about objects).
ENCODER_OUTPUTS = {f.name for f in fields(Encoded)}
EXAMPLE_METHODS = tuple(name for name, spec in METHODS.items() if set(spec.needs) <= ENCODER_OUTPUTS)


@dataclass
class Example:
    """An image with a question, and what is known about it."""

    name: str
    image: object  # HWC uint8 array, PIL image or path
    question: str
    answer: str | None = None  # the true answer, when known (ShapesWorld)


def shapes_examples(n: int = 4, seed: int = EXAMPLE_SEED) -> list[Example]:
    """ShapesWorld scenes with their question and answer (the world the embedded model knows)."""
    from rclib.shapes.world import sample_vqa

    return [Example(f"shapes scene {i}", s.image, s.question, s.answer) for i, s in enumerate(sample_vqa(seed, n))]


def photo_examples(folder: Path = SAMPLE_IMAGES) -> list[Example]:
    """The bundled photographs with their questions (``questions.json``); none if it is missing."""
    listing = folder / "questions.json"
    if not listing.is_file():
        return []
    questions = json.loads(listing.read_text())
    return [Example(f"{Path(file).stem}: {q}", folder / file, q) for file, asked in questions.items() for q in asked]


def examples_for_model(model_name: str = "shapes", n_scenes: int = 4) -> list[Example]:
    """Examples for a model: ShapesWorld scenes first for the embedded model, the photographs first otherwise."""
    scenes, photos = shapes_examples(n_scenes), photo_examples()
    return scenes + photos if model_name == "shapes" else photos + scenes
