"""ShapesWorld scenes precomputed as tensors for training and evaluation.

A `SceneBank` holds N scenes (images, per-patch labels, object presence) and every unambiguous
question of each scene as token ids, so training loops index tensors instead of drawing scenes.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing import Pool

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from rclib.shapes.build import PROMPT_TEMPLATE
from rclib.shapes.tokenizer import CLIP_MAX_LENGTH
from rclib.shapes.world import (
    COLORS,
    NUM_PATCHES,
    SHAPES,
    SIZE_CLASSES,
    WorldConfig,
    make_scene,
    questions_for,
)

NUM_PAIRS = len(COLORS) * len(SHAPES)  # (colour, shape) presence classes of the [CLS] head


@dataclass
class SceneBank:
    images: torch.Tensor  # (N, H, W, 3) uint8
    patch_colors: torch.Tensor  # (N, P) int64, colour id per patch, len(COLORS) = background
    patch_shapes: torch.Tensor  # (N, P) int64, shape id per patch, len(SHAPES) = background
    presence: torch.Tensor  # (N, NUM_PAIRS) float, 1 where a (colour, shape) object is in the scene
    num_objects: torch.Tensor  # (N,) int64
    captions: list[str]  # (N,) "a red circle and a blue square ..."
    # one row per (scene, unambiguous question), all templates:
    q_scene: torch.Tensor  # (Q,) int64, scene row
    q_text: list[str]  # (Q,) the question
    q_answer: list[str]  # (Q,) the answer word
    q_type: torch.Tensor  # (Q,) int64, 0 colour, 1 shape
    q_size: torch.Tensor  # (Q,) int64, index into SIZE_CLASSES of the asked-about object
    q_mask: torch.Tensor  # (Q, P) bool, the asked-about object's patches
    q_phrase: list[str]  # (Q,) the asked-about object as "a <colour> <shape>"

    def __len__(self) -> int:
        return len(self.images)


def _scene_rows(args: tuple[int, int, WorldConfig]):
    """Everything a bank keeps of one scene, as numpy (picklable for the worker pool)."""
    seed, index, config = args
    scene = make_scene(seed, index, config)
    colors, shapes = scene.patch_labels()
    colors[colors < 0] = len(COLORS)
    shapes[shapes < 0] = len(SHAPES)
    presence = np.zeros(NUM_PAIRS, dtype=np.float32)
    for obj in scene.objects:
        presence[list(COLORS).index(obj.color) * len(SHAPES) + SHAPES.index(obj.shape)] = 1
    questions = [
        (qtype == "shape", question, answer, SIZE_CLASSES.index(scene.objects[i].size_class),
         scene.objects[i].patch_mask.reshape(-1), scene.objects[i].phrase)
        for i, qtype, question, answer in questions_for(scene)
    ]
    return scene.image, colors, shapes, presence, len(scene.objects), scene.caption, questions


def make_bank(seed: int, n: int, config: WorldConfig = WorldConfig(), workers: int = 2) -> SceneBank:
    """Scenes 0..n-1 of stream `seed` with all their questions (deterministic, any worker count)."""
    jobs = [(seed, i, config) for i in range(n)]
    if workers > 1:
        with Pool(workers) as pool:
            rows = pool.map(_scene_rows, jobs, chunksize=256)
    else:
        rows = [_scene_rows(job) for job in jobs]
    q_rows = [(s, *q) for s, row in enumerate(rows) for q in row[6]]
    return SceneBank(
        images=torch.from_numpy(np.stack([r[0] for r in rows])),
        patch_colors=torch.from_numpy(np.stack([r[1] for r in rows])),
        patch_shapes=torch.from_numpy(np.stack([r[2] for r in rows])),
        presence=torch.from_numpy(np.stack([r[3] for r in rows])),
        num_objects=torch.tensor([r[4] for r in rows]),
        captions=[r[5] for r in rows],
        q_scene=torch.tensor([q[0] for q in q_rows]),
        q_text=[q[2] for q in q_rows],
        q_answer=[q[3] for q in q_rows],
        q_type=torch.tensor([int(q[1]) for q in q_rows]),
        q_size=torch.tensor([q[4] for q in q_rows]),
        q_mask=torch.from_numpy(np.stack([q[5] for q in q_rows])),
        q_phrase=[q[6] for q in q_rows],
    )


def pixel_values(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W), as the shipped CLIPImageProcessor does."""
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255 - mean) / std


def encode_texts(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> dict[str, torch.Tensor]:
    """CLIP text inputs (BOS ... EOS, right-padded to CLIP_MAX_LENGTH)."""
    return tokenizer(texts, padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True, return_tensors="pt")


FOLLOW_UP_TEMPLATE = "USER: {question} ASSISTANT:"  # later turns of a LLaVA-1.5 conversation


@dataclass
class PromptTable:
    """LLaVA token ids per unique question, for conversations
    `USER: <image>x P\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>...`."""

    ids: dict[str, list[int]]  # question -> first-turn prompt ids (BOS, image tokens expanded)
    follow_up_ids: dict[str, list[int]]  # question -> later-turn prompt ids (no BOS, no image)
    answer_ids: dict[str, int]  # answer word -> token id


def prompt_table(tokenizer: PreTrainedTokenizerFast, questions: list[str], answers: list[str]) -> PromptTable:
    image_tokens = tokenizer.image_token * NUM_PATCHES
    ids, follow_up_ids = {}, {}
    for question in sorted(set(questions)):
        prompt = PROMPT_TEMPLATE.format(question=question).replace(tokenizer.image_token, image_tokens)
        ids[question] = tokenizer(prompt)["input_ids"]
        follow_up = FOLLOW_UP_TEMPLATE.format(question=question)
        follow_up_ids[question] = tokenizer(follow_up, add_special_tokens=False)["input_ids"]
    answer_ids = {a: tokenizer.convert_tokens_to_ids(a) for a in sorted(set(answers))}
    assert tokenizer.unk_token_id not in answer_ids.values(), "an answer word is missing from the vocabulary"
    return PromptTable(ids, follow_up_ids, answer_ids)
