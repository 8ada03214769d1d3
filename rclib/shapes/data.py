"""ShapesWorld scenes precomputed as tensors for training, and conversations as token ids.

A `SceneBank` holds N scenes (images, per-patch labels, captions) and `per_scene` questions of each
scene (families round-robin), so training loops index tensors instead of drawing scenes.
`conversation_batch` lays out LLaVA-1.5 multi-turn conversations about one image per row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from multiprocessing import Pool

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from rclib.shapes.build import PROMPT_TEMPLATE
from rclib.shapes.world import (
    ANSWER_WORDS,
    COLORS,
    DIGITS,
    FAMILIES,
    IMAGE_SIZE,
    LETTERS,
    NUM_PATCHES,
    RELATIONS,
    SHAPES,
    Scene,
    WorldConfig,
    patch_coverage,
    patch_mask,
    scene_questions,
)

MAX_NAMED = 2  # named objects per question (position names two)
OBJECT_WORDS: dict[str, tuple[str, ...]] = {"color": tuple(COLORS), "shape": SHAPES, "digit": DIGITS}  # an object's words
# per-patch label sets of the vision tower's dense heads; each has a last "none" class
LABELS: dict[str, int] = {name: len(words) + 1 for name, words in OBJECT_WORDS.items()}
PAIR_SIDES: tuple[tuple[str, str], ...] = (("left", "right"), ("above", "below"))  # per axis (x, y), smaller first


@dataclass
class SceneBank:
    images: torch.Tensor  # (N, H, W, 3) uint8
    patch_labels: dict[str, torch.Tensor]  # LABELS name -> (N, P) int64, last class = no object / no digit
    captions: list[str]  # (N,) "a red circle and a blue square ..."
    # one row per question, `per_scene` per scene:
    q_scene: torch.Tensor  # (Q,) int64, scene row
    q_text: list[str]  # (Q,) the question
    q_answer: list[str]  # (Q,) the answer word
    q_family: torch.Tensor  # (Q,) int64, index into FAMILIES
    q_target: torch.Tensor  # (Q, P) bool, patches of the sample's target_pixel_mask
    q_name_end: torch.Tensor  # (Q, MAX_NAMED) int64, word index of each named object's last word, -1 = none
    q_named: torch.Tensor  # (Q, MAX_NAMED, P) bool, each named object's patches
    q_coarse: torch.Tensor  # (Q, MAX_NAMED, P) bool, patches of every object sharing the name's last word
    q_two_words: torch.Tensor  # (Q, MAX_NAMED) bool, the name is "{colour} {shape}" (its last word follows a colour)
    q_glyph: torch.Tensor  # (Q, MAX_NAMED, P) bool, patches the named object's digit is drawn in (none: empty)
    q_object_words: torch.Tensor  # (Q, MAX_NAMED, 3) int64, the named object's index in COLORS, SHAPES, DIGITS
    # (OBJECT_WORDS order), -1 = no such object / no digit
    q_pair_sides: torch.Tensor  # (Q, 2) int64, per axis of PAIR_SIDES the first named object's side of the second
    # (0 = left / above), -1 = fewer than two named objects or closer than min_offset along that axis
    q_name_halves: torch.Tensor  # (Q, MAX_NAMED, 2) int64, per axis of PAIR_SIDES the half of the image the named
    # object's centre lies in (0 = left / upper), -1 = no such object or within min_offset / 2 of the middle

    def __len__(self) -> int:
        return len(self.images)


def scene_labels(scene: Scene) -> dict[str, np.ndarray]:
    """Per-patch class of each LABELS head, (P,) int64 each: the object covering most of the patch
    (at least `patch_cover`), the digit whose ink touches it; the last class where none."""
    labels = {name: np.full(NUM_PATCHES, count - 1, dtype=np.int64) for name, count in LABELS.items()}
    best = np.zeros(NUM_PATCHES)
    for obj in scene.objects:
        mask = patch_mask(obj.pixel_mask).reshape(-1)
        cover = patch_coverage(obj.pixel_mask).reshape(-1)
        wins = mask & (cover > best)
        labels["color"][wins] = list(COLORS).index(obj.color)
        labels["shape"][wins] = SHAPES.index(obj.shape)
        best = np.where(wins, cover, best)
        if obj.digit is not None:
            labels["digit"][patch_mask(obj.glyph_mask, cover=1e-9).reshape(-1)] = DIGITS.index(obj.digit)
    return labels


def _scene_rows(args: tuple[int, int, int, WorldConfig]):
    """Everything a bank keeps of one scene, as numpy (picklable for the worker pool)."""
    seed, index, per_scene, config = args
    samples = scene_questions(seed, index, FAMILIES, per_scene, config, family_offset=index % len(FAMILIES))
    scene = samples[0].scene
    questions = []
    for s in samples:
        words = s.question.split()
        ends = np.full(MAX_NAMED, -1, dtype=np.int64)
        named = np.zeros((MAX_NAMED, NUM_PATCHES), dtype=bool)
        coarse = np.zeros((MAX_NAMED, NUM_PATCHES), dtype=bool)
        two_words = np.zeros(MAX_NAMED, dtype=bool)
        glyph = np.zeros((MAX_NAMED, NUM_PATCHES), dtype=bool)
        object_words = np.full((MAX_NAMED, len(OBJECT_WORDS)), -1, dtype=np.int64)
        centers = np.zeros((MAX_NAMED, 2), dtype=np.int64)
        for k, (end, mask) in enumerate(s.named):
            ends[k], named[k] = end, patch_mask(mask, config.patch_cover).reshape(-1)
            obj = next(o for o in scene.objects if o.pixel_mask is mask)
            object_words[k] = [vocab.index(w) if w is not None else -1
                               for vocab, w in zip(OBJECT_WORDS.values(), (obj.color, obj.shape, obj.digit))]
            centers[k] = obj.center
            if obj.digit is not None:
                glyph[k] = patch_mask(obj.glyph_mask, cover=1e-9).reshape(-1)
            for obj in scene.objects:
                if words[end] in (obj.color, obj.shape):
                    coarse[k] |= patch_mask(obj.pixel_mask, config.patch_cover).reshape(-1)
            two_words[k] = words[end - 1] in COLORS
        from_middle = centers - IMAGE_SIZE / 2  # (MAX_NAMED, 2) x, y of each named object from the image's middle
        halves = np.where(np.abs(from_middle) >= config.min_offset / 2, (from_middle > 0).astype(np.int64), -1)
        halves[len(s.named):] = -1
        sides = np.full(len(PAIR_SIDES), -1, dtype=np.int64)
        if len(s.named) == 2:
            offset = centers[0] - centers[1]  # (2,) x, y of the first named object relative to the second
            clear = np.abs(offset) >= config.min_offset
            sides[clear] = (offset[clear] > 0).astype(np.int64)
        target = patch_mask(s.target_pixel_mask, config.patch_cover).reshape(-1)
        questions.append({"q_text": s.question, "q_answer": s.answer, "q_family": FAMILIES.index(s.family),
                          "q_target": target, "q_name_end": ends, "q_named": named, "q_coarse": coarse,
                          "q_two_words": two_words, "q_glyph": glyph, "q_object_words": object_words,
                          "q_pair_sides": sides, "q_name_halves": halves})  # SceneBank field -> value
    return scene.image, scene_labels(scene), scene.caption, questions


def make_bank(seed: int, n: int, per_scene: int = 10, config: WorldConfig = WorldConfig(), workers: int = 2) -> SceneBank:
    """Scenes 0..n-1 of stream `seed` with `per_scene` questions each (deterministic, any worker count)."""
    jobs = [(seed, i, per_scene, config) for i in range(n)]
    if workers > 1:
        with Pool(workers) as pool:
            rows = pool.map(_scene_rows, jobs, chunksize=64)
    else:
        rows = [_scene_rows(job) for job in jobs]
    questions = [{**q, "q_scene": s} for s, row in enumerate(rows) for q in row[3]]
    arrays = {name: torch.from_numpy(np.stack([q[name] for q in questions])) for name in questions[0]
              if isinstance(questions[0][name], np.ndarray)}  # per-question masks, ids and sides
    return SceneBank(
        images=torch.from_numpy(np.stack([r[0] for r in rows])),
        patch_labels={name: torch.from_numpy(np.stack([r[1][name] for r in rows])) for name in LABELS},
        captions=[r[2] for r in rows],
        q_scene=torch.tensor([q["q_scene"] for q in questions]),
        q_text=[q["q_text"] for q in questions],
        q_answer=[q["q_answer"] for q in questions],
        q_family=torch.tensor([q["q_family"] for q in questions]),
        **arrays,
    )


def pixel_values(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W), as the shipped CLIPImageProcessor does."""
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255 - mean) / std


FOLLOW_UP_TEMPLATE = "USER: {question} ASSISTANT:"  # later turns of a LLaVA-1.5 conversation


@dataclass
class Conversations:
    """Rows `USER: <image>x P\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>...`, left-padded."""

    ids: torch.Tensor  # (B, L) int64
    attention_mask: torch.Tensor  # (B, L) int64, 1 for real tokens
    target_pos: torch.Tensor  # (B, 2T) int64, positions whose next token is scored (answer, then EOS)
    targets: torch.Tensor  # (B, 2T) int64, the expected next tokens, -100 = none (shorter rows)
    image_start: torch.Tensor  # (B,) int64, position of the first image token
    name_pos: torch.Tensor  # (B, T, MAX_NAMED) int64, position of each named object's last word, -1 = none
    named: torch.Tensor  # (B, T, MAX_NAMED, P) bool, each named object's patches
    coarse: torch.Tensor  # (B, T, MAX_NAMED, P) bool, every object sharing the name's last word
    previous_pos: torch.Tensor  # (B, T, MAX_NAMED) int64, the name's first word when it has two, -1 = none
    glyph: torch.Tensor  # (B, T, MAX_NAMED, P) bool, the named object's digit patches (empty: no digit)
    object_words: torch.Tensor  # (B, T, MAX_NAMED, 3) int64, see SceneBank.q_object_words
    relation_pos: torch.Tensor  # (B, T) int64, a position question's relation word ("left", "above", ...), -1 = none
    option_pos: torch.Tensor  # (B, T, len(LETTERS)) int64, a choice question's option words, -1 = none
    letter_pos: torch.Tensor  # (B, T, len(LETTERS)) int64, each option's letter, -1 = none
    chosen_pos: torch.Tensor  # (B, T) int64, the option word of a choice question's answer, -1 = none
    verdict_pos: torch.Tensor  # (B, T) int64, a position question's relation word when the relation holds, else its
    # answer position (the query itself), -1 = not a position question
    pair_sides: torch.Tensor  # (B, T, 2) int64, see SceneBank.q_pair_sides
    name_halves: torch.Tensor  # (B, T, MAX_NAMED, 2) int64, see SceneBank.q_name_halves
    family: torch.Tensor  # (B, T) int64, each question's index into FAMILIES, -1 = none

    @property
    def position_ids(self) -> torch.Tensor:
        """(B, L) positions counted over real tokens, as `generate` counts them for left-padded rows."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)


class PromptLayout:
    """Token ids of the LLaVA prompt pieces around a question (a word-level tokenizer: one id per word)."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast):
        self.tokenizer = tokenizer
        before, after = PROMPT_TEMPLATE.split("{question}")
        first = tokenizer(before)["input_ids"]  # BOS user : <image>
        image_id = tokenizer.convert_tokens_to_ids(tokenizer.image_token)
        at = first.index(image_id)
        self.first_prefix = first[:at] + [image_id] * NUM_PATCHES + first[at + 1 :]
        self.image_start = at
        follow_before, follow_after = FOLLOW_UP_TEMPLATE.split("{question}")
        self.follow_prefix = tokenizer(follow_before, add_special_tokens=False)["input_ids"]
        self.suffix = tokenizer(after, add_special_tokens=False)["input_ids"]  # assistant :
        assert tokenizer(follow_after, add_special_tokens=False)["input_ids"] == self.suffix

    def words(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text.split()) and self.tokenizer.unk_token_id not in ids, \
            f"every word of {text!r} must be one vocabulary token"
        return ids


RELATION_WORDS = {relation.split()[0] for relation in RELATIONS}  # "left", "right", "above", "below"


def question_slots(question: str) -> tuple[int, list[int], list[int]]:
    """Word indices in `question` of its relation word and of its options' letters and words (choice:
    "? a . red b . blue ..." after the "?"); -1 / [] where none."""
    words = question.split()
    end = words.index("?") if "?" in words else len(words)
    relation = next((i for i, w in enumerate(words[:end]) if w in RELATION_WORDS), -1)
    letters = [i for i in range(end + 1, len(words) - 2) if words[i] in LETTERS and words[i + 1] == "."]
    return relation, letters, [i + 2 for i in letters]


def conversation_batch(layout: PromptLayout, bank: SceneBank, rows_per_scene: list[list[int]]) -> Conversations:
    """One conversation per list of question rows (all about one scene), answers scored as word + EOS."""
    tokenizer = layout.tokenizer
    eos = tokenizer.eos_token_id
    built = []
    for rows in rows_per_scene:
        ids, positions, expected, name_pos, slots = [], [], [], [], []
        for turn, r in enumerate(rows):
            ids += layout.first_prefix if turn == 0 else layout.follow_prefix
            question_start = len(ids)
            ids += layout.words(bank.q_text[r]) + layout.suffix
            ends = bank.q_name_end[r]
            name_pos.append(torch.where(ends >= 0, ends + question_start, -1))
            relation, letters, options = question_slots(bank.q_text[r])
            pad_options = [-1] * (len(LETTERS) - len(options))
            slots.append(torch.tensor([relation] + letters + pad_options + options + pad_options))
            slots[-1] = torch.where(slots[-1] >= 0, slots[-1] + question_start, -1)
            answer = layout.words(bank.q_answer[r])[0]
            positions += [len(ids) - 1, len(ids)]  # predict the answer, then EOS after it
            expected += [answer, eos]
            ids += [answer, eos]
        built.append((ids, positions, expected, name_pos, rows, slots))
    B, L = len(built), max(len(b[0]) for b in built)
    T = max(len(b[4]) for b in built)
    out = Conversations(
        ids=torch.full((B, L), tokenizer.pad_token_id, dtype=torch.long),
        attention_mask=torch.zeros((B, L), dtype=torch.long),
        target_pos=torch.zeros((B, 2 * T), dtype=torch.long),
        targets=torch.full((B, 2 * T), -100, dtype=torch.long),
        image_start=torch.zeros(B, dtype=torch.long),
        name_pos=torch.full((B, T, MAX_NAMED), -1, dtype=torch.long),
        named=torch.zeros((B, T, MAX_NAMED, NUM_PATCHES), dtype=torch.bool),
        coarse=torch.zeros((B, T, MAX_NAMED, NUM_PATCHES), dtype=torch.bool),
        previous_pos=torch.full((B, T, MAX_NAMED), -1, dtype=torch.long),
        glyph=torch.zeros((B, T, MAX_NAMED, NUM_PATCHES), dtype=torch.bool),
        object_words=torch.full((B, T, MAX_NAMED, len(OBJECT_WORDS)), -1, dtype=torch.long),
        relation_pos=torch.full((B, T), -1, dtype=torch.long),
        option_pos=torch.full((B, T, len(LETTERS)), -1, dtype=torch.long),
        letter_pos=torch.full((B, T, len(LETTERS)), -1, dtype=torch.long),
        chosen_pos=torch.full((B, T), -1, dtype=torch.long),
        verdict_pos=torch.full((B, T), -1, dtype=torch.long),
        pair_sides=torch.full((B, T, len(PAIR_SIDES)), -1, dtype=torch.long),
        name_halves=torch.full((B, T, MAX_NAMED, len(PAIR_SIDES)), -1, dtype=torch.long),
        family=torch.full((B, T), -1, dtype=torch.long),
    )
    n = len(LETTERS)
    for b, (ids, positions, expected, name_pos, rows, slots) in enumerate(built):
        pad = L - len(ids)  # left padding shifts every position of the row
        out.ids[b, pad:] = torch.tensor(ids)
        out.attention_mask[b, pad:] = 1
        out.target_pos[b, : len(positions)] = torch.tensor(positions) + pad
        out.targets[b, : len(expected)] = torch.tensor(expected)
        out.image_start[b] = layout.image_start + pad
        stacked = torch.stack(name_pos)  # (t, MAX_NAMED)
        out.name_pos[b, : len(rows)] = torch.where(stacked >= 0, stacked + pad, -1)
        picked = torch.tensor(rows)
        for name in ("named", "coarse", "glyph", "object_words", "pair_sides", "name_halves", "family"):  # per question
            getattr(out, name)[b, : len(rows)] = getattr(bank, f"q_{name}")[picked]
        two_words = bank.q_two_words[picked] & (out.name_pos[b, : len(rows)] >= 0)
        out.previous_pos[b, : len(rows)] = torch.where(two_words, out.name_pos[b, : len(rows)] - 1, -1)
        slot = torch.stack(slots)  # (t, 1 + 2n): relation, n letters, n options
        slot = torch.where(slot >= 0, slot + pad, -1)
        out.relation_pos[b, : len(rows)] = slot[:, 0]
        out.letter_pos[b, : len(rows)] = slot[:, 1 : 1 + n]
        out.option_pos[b, : len(rows)] = slot[:, 1 + n :]
        for t, r in enumerate(rows):
            if bank.q_answer[r] in LETTERS and out.option_pos[b, t, 0] >= 0:
                out.chosen_pos[b, t] = out.option_pos[b, t, LETTERS.index(bank.q_answer[r])]
            if out.relation_pos[b, t] >= 0:
                holds = bank.q_answer[r] == ANSWER_WORDS[0]  # "yes"
                out.verdict_pos[b, t] = out.relation_pos[b, t] if holds else out.target_pos[b, 2 * t]
    return out


def image_lengths(weights: torch.Tensor) -> torch.Tensor:
    """(B,) K_b: the tokens of each shortened image, mixing weights (B, K, P) with rows of zeros past K_b."""
    return (weights.sum(-1) > 0).sum(-1)


def shorten(conv: Conversations, weights: torch.Tensor) -> Conversations:
    """The conversations as the LM reads them when row b's image is cut to K_b tokens, token k the mix
    weights[b, k] (B, K, P) of the patches (rows of zeros past K_b): `splice_image_tokens` drops the row's
    last P - K_b placeholders and pads on the left again, so every position after the image moves by the
    same amount (left padding right-aligns the rows) and the image starts P - K_b later in row b. Patch masks
    become token masks (B, ..., K): a token is on an object when any of its patches is."""
    B, L = conv.ids.shape
    n_output = image_lengths(weights)
    cut = NUM_PATCHES - n_output
    positions = torch.arange(L)
    start = conv.image_start[:, None]
    kept = conv.attention_mask.bool() & ~((positions >= start + n_output[:, None]) & (positions < start + NUM_PATCHES))
    length = int(kept.sum(-1).max())
    shift = length - L  # <= 0
    padding = conv.ids[conv.attention_mask == 0]
    ids = torch.full((B, length), int(padding[0]) if len(padding) else 0, dtype=torch.long)
    attention_mask = torch.zeros((B, length), dtype=torch.long)
    for b in range(B):
        row = conv.ids[b][kept[b]]
        ids[b, length - len(row):], attention_mask[b, length - len(row):] = row, 1
    on = (weights > 0).float()  # (B, K, P)

    def moved(pos: torch.Tensor) -> torch.Tensor:
        return torch.where(pos >= 0, pos + shift, pos)

    def to_tokens(mask: torch.Tensor) -> torch.Tensor:  # (B, T, N, P) -> (B, T, N, K)
        return torch.einsum("btnp,bkp->btnk", mask.float(), on) > 0

    return replace(
        conv, ids=ids, attention_mask=attention_mask, target_pos=(conv.target_pos + shift).clamp(min=0),
        image_start=conv.image_start + shift + cut, name_pos=moved(conv.name_pos), named=to_tokens(conv.named),
        coarse=to_tokens(conv.coarse), previous_pos=moved(conv.previous_pos), glyph=to_tokens(conv.glyph),
        relation_pos=moved(conv.relation_pos), option_pos=moved(conv.option_pos), letter_pos=moved(conv.letter_pos),
        chosen_pos=moved(conv.chosen_pos), verdict_pos=moved(conv.verdict_pos))


def without_lost_evidence(conv: Conversations, shortened: Conversations) -> Conversations:
    """`shortened` (the conversations after `shorten`) with no target for a question whose evidence the shortened
    image lost: a named object none of whose patches any token carries, or, for a glyph question, a digit none of
    whose patches survive. Its answer and EOS are not scored and its hops (attention and lens targets) are
    dropped, so training never teaches an answer the image no longer shows. conv: the same rows before `shorten`
    (patch masks), shortened: after (token masks)."""
    def kept(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:  # (B, T, N): absent objects count as kept
        return ~before.any(-1) | after.any(-1)

    glyph_question = conv.family == FAMILIES.index("glyph")
    answerable = kept(conv.named, shortened.named).all(-1) & (~glyph_question | kept(conv.glyph, shortened.glyph).all(-1))
    lost = ~answerable  # (B, T)
    both = lost.repeat_interleave(2, dim=1)  # (B, 2T): the answer and its EOS
    off = lambda field: torch.where(lost.view(*lost.shape, *[1] * (field.dim() - 2)), -1, field)  # noqa: E731
    return replace(shortened, targets=torch.where(both, -100, shortened.targets), name_pos=off(shortened.name_pos),
                   previous_pos=off(shortened.previous_pos), relation_pos=off(shortened.relation_pos),
                   chosen_pos=off(shortened.chosen_pos), verdict_pos=off(shortened.verdict_pos),
                   object_words=off(shortened.object_words), pair_sides=off(shortened.pair_sides),
                   name_halves=off(shortened.name_halves))
