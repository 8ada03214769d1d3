"""The example images and questions the notebooks, the explorer and the CLI's demo start from, and what a model
can be asked about them.

ShapesWorld scenes come with their true answer (the embedded model was trained on that world); the
bundled photographs (``data/images``, listed with their questions in ``questions.json``) have none.

The embedded model reads a closed vocabulary (a word-level tokenizer: any other word becomes its unknown
token) and has only seen ShapesWorld scenes, so its output on a photograph, or to a question with words it
never saw, is not an answer. :func:`known_words` and :func:`caveats` say so, for the explorer, the
notebooks and the CLI alike; a real checkpoint (a subword tokenizer spells any word) has no such caveat.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from rclib.methods import METHODS
from rclib.models.batch import Encoded
from rclib.shapes.world import FAMILIES, question_family, sample_vqa

SAMPLE_IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"
EXAMPLE_SEED = 7  # ShapesWorld stream of the example scenes (the shipped models train on other seeds)
# The methods that run on an example: those needing nothing beyond the encoders' outputs (not the oracle,
# which needs the true mask of the asked-about objects).
ENCODER_OUTPUTS = {f.name for f in fields(Encoded)}
EXAMPLE_METHODS = tuple(name for name, spec in METHODS.items() if set(spec.needs) <= ENCODER_OUTPUTS)
LEARNED = 0.9  # all-token held-out accuracy from which a ShapesWorld model is said to answer a question family
REAL_CHECKPOINT = ('a real checkpoint: load("llava-1.5-7b") (MODEL = "llava-1.5-7b" in a notebook, --model '
                   "llava-1.5-7b on the command line) with llava-hf/llava-1.5-7b-hf and "
                   "openai/clip-vit-large-patch14-336 in the Hugging Face cache (`hf download <id>` on a machine with "
                   "network)")


@dataclass
class Example:
    """An image with a question, and what is known about it."""

    name: str
    image: object  # HWC uint8 array, PIL image or path
    question: str
    answer: str | None = None  # the true answer, when known (ShapesWorld)
    scene: bool = False  # True: a ShapesWorld scene, the only kind of image the embedded model was trained on


def shapes_examples(n: int = 5, seed: int = EXAMPLE_SEED) -> list[Example]:
    """ShapesWorld scenes with their question and answer (the world the embedded model knows); the question
    families take turns, so five scenes ask one question of each."""
    return [Example(f"shapes scene {i} ({s.family})", s.image, s.question, s.answer, scene=True)
            for i, s in enumerate(sample_vqa(seed, n))]


def photo_examples(folder: Path = SAMPLE_IMAGES) -> list[Example]:
    """The bundled photographs with their questions (``questions.json``); none if it is missing."""
    listing = folder / "questions.json"
    if not listing.is_file():
        return []
    questions = json.loads(listing.read_text())
    return [Example(f"{Path(file).stem}: {q}", folder / file, q) for file, asked in questions.items() for q in asked]


def examples_for_model(model_name: str = "shapes", n_scenes: int = 5) -> list[Example]:
    """Examples for a model: ShapesWorld scenes first for the embedded model, the photographs first otherwise."""
    scenes, photos = shapes_examples(n_scenes), photo_examples()
    return scenes + photos if model_name == "shapes" else photos + scenes


def known_words(model) -> list[str] | None:
    """The words a closed-vocabulary model reads, in its tokenizer's order (special tokens left out); None when
    its tokenizer is not word-level (a real checkpoint's subword tokenizer spells any word).

    model: a loaded :class:`~rclib.models.CompressedModel`.
    """
    tokenizer = model.processor.tokenizer
    if type(tokenizer.backend_tokenizer.model).__name__ != "WordLevel":
        return None
    special = set(tokenizer.all_special_tokens)
    vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return [word for word, _ in vocabulary if word not in special]


def unknown_words(model, question: str) -> list[str]:
    """The words of ``question`` a closed-vocabulary model reads as its unknown token, in order, each once
    (none for a subword tokenizer, see :func:`known_words`)."""
    tokenizer = model.processor.tokenizer
    if known_words(model) is None:
        return []
    encoding = tokenizer.backend_tokenizer.encode(question, add_special_tokens=False)
    unknown = [question[start:end] for token, (start, end) in zip(encoding.ids, encoding.offsets)
               if token == tokenizer.unk_token_id]
    return list(dict.fromkeys(unknown))


def caveats(model, question: str, scene: bool) -> list[str]:
    """Why the model's output to ``question`` about an image is not an answer, one sentence per reason; empty
    when nothing is known against it.

    scene: whether the image is a ShapesWorld scene. A closed-vocabulary model (the embedded one) was trained
    on those only; its figures on a photograph still show what each method keeps. On a scene, a question of a
    family the model did not learn (all-token accuracy below :data:`LEARNED` in its ``metrics.json``) gets a
    caveat too. Real answers need :data:`REAL_CHECKPOINT`.
    """
    words = known_words(model)
    if words is None:
        return []
    found = []
    if not scene:
        found.append(f"This model was trained on ShapesWorld scenes only and reads {len(words)} words: on a "
                     "photograph its output is not an answer (the figures still show which tokens each method keeps).")
    family = question_family(question)
    accuracy = family_accuracy(model)
    if scene and family is not None and accuracy.get(family, 1.0) < LEARNED:
        learned = [f for f, a in accuracy.items() if a >= LEARNED]
        found.append(f"This model did not learn {family} questions: with all tokens it answers "
                     f"only {accuracy[family]:.0%} of them on held-out scenes, so its output is "
                     f"not an answer. It answers {english_list(learned, 'none of its families')} questions "
                     "(see data/models/README.md).")
    unknown = unknown_words(model, question)
    if unknown:
        listed = ", ".join(f"“{w}”" for w in unknown)
        found.append(f"The model never saw the word{'s' if len(unknown) > 1 else ''} {listed}: it reads "
                     f"{'them' if len(unknown) > 1 else 'it'} as an unknown token, so its output does not "
                     "answer this question. Ask with the words it knows.")
    return found


def family_accuracy(model) -> dict[str, float]:
    """A ShapesWorld model's all-token accuracy per question family, from the ``metrics.json`` its training wrote
    next to its checkpoint folder; empty when there is none (a real checkpoint, a model without a card)."""
    path = Path(model.model.name_or_path).parent / "metrics.json"
    if not path.is_file():
        return {}
    measured = json.loads(path.read_text()).get("all_tokens", {})
    return {family: measured[f"accuracy_{family}"] for family in FAMILIES if f"accuracy_{family}" in measured}


def english_list(items, empty: str = "none") -> str:
    """Items in an English list: "a", "a and b", "a, b and c"; `empty` when there is none."""
    items = list(items)
    if not items:
        return empty
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def learned_families(model) -> tuple[str, ...]:
    """The ShapesWorld families ``model`` answers (all-token accuracy at least :data:`LEARNED` in its
    ``metrics.json``); every family when it has no such file (a real checkpoint is not measured here)."""
    accuracy = family_accuracy(model)
    return tuple(f for f in FAMILIES if accuracy.get(f, 1.0) >= LEARNED)


def accuracy_caveat(model, questions: list[str]) -> str | None:
    """What a benchmark's accuracy on ``questions`` cannot mean for this model: words it never saw (the evidence
    metrics, which only follow the tokens to the LLM, still hold) and question families it did not learn. None
    when neither applies."""
    found = []
    unread = [q for q in questions if unknown_words(model, q)]
    if unread:
        words = list(dict.fromkeys(w for q in unread for w in unknown_words(model, q)))
        shown = ", ".join(f"“{w}”" for w in words[:8]) + (", ..." if len(words) > 8 else "")
        found.append(f"This model never saw some words of {len(unread)} of these {len(questions)} questions ({shown}): "
                     "its accuracy on them measures nothing (it answers from the words it knows). The evidence columns, "
                     "which follow the asked-about patches to the LLM, do not depend on its words and still hold.")
    accuracy, learned = family_accuracy(model), learned_families(model)
    asked = dict.fromkeys(question_family(q) for q in questions)
    untrained = [f for f in asked if f is not None and f not in learned]
    if untrained:
        shown = ", ".join(f"{f} {accuracy[f]:.0%}" for f in untrained)
        found.append(f"This model did not learn {english_list(untrained)} questions (all-token accuracy on held-out "
                     f"scenes: {shown}): its accuracy on them, and any mean over them, measures nothing. It answers "
                     f"{english_list(learned, 'none of its families')} questions.")
    return " ".join(found) or None
