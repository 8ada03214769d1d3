"""The three quality measures of the ShapesWorld models, on held-out scenes.

- `vqa_accuracy`: full-token answers through the real path (`LlavaProcessor` + `model.generate`).
- `pointing_rate`: how often the patch with the highest CLIP text score (cosine between the question's
  text embedding and `visual_projection` of the final-layer patch tokens) lies in the named object.
- `visual_only_accuracy`: answers when only the top-K patches by the last vision layer's [CLS]
  attention reach the LLM (FasterVLM-style pruning), by object size.

The splice helpers (`answer_batch`, `lm_hidden`) are shared with training: the LLM sees projected
penultimate-layer patch features in place of the `<image>` tokens, K of them when pruned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPModel, LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast

from rclib.methods import compress
from rclib.models.vision import encode_vision
from rclib.result import Fate
from rclib.shapes.build import PROMPT_TEMPLATE
from rclib.shapes.data import PromptTable, SceneBank, encode_texts, pixel_values
from rclib.shapes.world import NUM_PATCHES, SIZE_CLASSES

EVAL_SEED = 1  # held-out world stream; training uses seed 0


@dataclass
class AnswerBatch:
    ids: torch.Tensor  # (B, L) int64, conversation token ids, right-padded
    attention_mask: torch.Tensor  # (B, L) int64
    target_pos: torch.Tensor  # (B, T) int64, positions whose next-token logits are scored
    targets: torch.Tensor  # (B, T) int64, the expected next tokens (answer word, EOS, ...), -100 = none

    @property
    def first_answer(self) -> torch.Tensor:
        """(B,) the first turn's answer token ids."""
        return self.targets[:, 0]


def answer_batch(
    table: PromptTable,
    conversations: list[list[tuple[str, str]]],
    num_image_tokens: int,
    tokenizer: PreTrainedTokenizerFast,
) -> AnswerBatch:
    """Token ids of (question, answer) conversations, the image placeholder run cut to `num_image_tokens`.

    Each answer is scored as its word then EOS; a single-turn conversation is the evaluation prompt.
    """
    image_id = tokenizer.convert_tokens_to_ids(tokenizer.image_token)
    rows, positions, expected = [], [], []
    for turns in conversations:
        (question, _), *_ = turns
        prompt = table.ids[question]
        first = prompt.index(image_id)
        row = prompt[:first] + [image_id] * num_image_tokens + prompt[first + NUM_PATCHES :]
        row_positions, row_expected = [], []
        for turn, (question, answer) in enumerate(turns):
            if turn > 0:
                row = row + table.follow_up_ids[question]
            answer_id = table.answer_ids[answer]
            row_positions += [len(row) - 1, len(row)]  # predict the answer, then EOS after it
            row_expected += [answer_id, tokenizer.eos_token_id]
            row = row + [answer_id, tokenizer.eos_token_id]
        rows.append(row)
        positions.append(row_positions)
        expected.append(row_expected)
    length = max(len(r) for r in rows)
    targets_per_row = max(len(p) for p in positions)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    target_pos = torch.zeros((len(rows), targets_per_row), dtype=torch.long)
    targets = torch.full((len(rows), targets_per_row), -100, dtype=torch.long)
    for i, (row, pos, exp) in enumerate(zip(rows, positions, expected)):
        ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        target_pos[i, : len(pos)] = torch.tensor(pos)
        targets[i, : len(exp)] = torch.tensor(exp)
    return AnswerBatch(ids, attention_mask, target_pos, targets)


def single_turns(bank: SceneBank, rows) -> list[list[tuple[str, str]]]:
    """One-question conversations for question rows of a bank."""
    return [[(bank.q_text[r], bank.q_answer[r])] for r in rows]


def lm_hidden(
    llava: LlavaForConditionalGeneration, batch: AnswerBatch, image_features: torch.Tensor, with_attentions: bool = False
):
    """LLM last hidden states (B, L, D) with projected `image_features` (B, K, W) at the image tokens.

    Returns (hidden, attentions): per-layer attention weights (B, H, L, L) via eager attention when
    `with_attentions`, else None.
    """
    embeds = llava.get_input_embeddings()(batch.ids)  # (B, L, D)
    projected = llava.model.multi_modal_projector(image_features)  # (B, K, D)
    image_slots = (batch.ids == llava.config.image_token_id).unsqueeze(-1)  # (B, L, 1)
    assert int(image_slots.sum()) == projected.shape[0] * projected.shape[1], (
        "image token count differs from the number of image features; build the batch with K = features.shape[1]"
    )
    embeds = embeds.masked_scatter(image_slots, projected.to(embeds.dtype))
    language_model = llava.model.language_model
    if not with_attentions:
        return language_model(inputs_embeds=embeds, attention_mask=batch.attention_mask).last_hidden_state, None
    implementation = language_model.config._attn_implementation
    language_model.config._attn_implementation = "eager"  # sdpa returns no attention weights
    out = language_model(inputs_embeds=embeds, attention_mask=batch.attention_mask, output_attentions=True)
    language_model.config._attn_implementation = implementation
    return out.last_hidden_state, out.attentions


def answer_logits(llava: LlavaForConditionalGeneration, batch: AnswerBatch, image_features: torch.Tensor) -> torch.Tensor:
    """Next-token logits (B, T, V) at the batch's target positions."""
    hidden, _ = lm_hidden(llava, batch, image_features)  # (B, L, D)
    picked = hidden.gather(1, batch.target_pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (B, T, D)
    return llava.lm_head(picked)


def by_size(correct: np.ndarray, sizes: np.ndarray) -> dict[str, float]:
    """Mean of `correct` overall and per size class (`sizes` are indices into SIZE_CLASSES)."""
    result = {"all": float(correct.mean())}
    for i, name in enumerate(SIZE_CLASSES):
        result[name] = float(correct[sizes == i].mean()) if (sizes == i).any() else float("nan")
    return result


def eval_rows(bank: SceneBank, per_scene: int = 1, seed: int = 0) -> np.ndarray:
    """`per_scene` question rows per scene, picked at random (fixed seed), as an index array."""
    rng = np.random.default_rng(seed)
    scenes = bank.q_scene.numpy()
    rows = []
    for s in range(len(bank)):
        candidates = np.flatnonzero(scenes == s)
        rows.extend(rng.choice(candidates, size=min(per_scene, len(candidates)), replace=False))
    return np.array(rows)


@torch.no_grad()
def vqa_accuracy(
    llava: LlavaForConditionalGeneration, processor: LlavaProcessor, bank: SceneBank, rows: np.ndarray, batch_size: int = 32
) -> dict[str, float]:
    """Exact-match accuracy of greedy `generate` answers (all image tokens), overall and by size."""
    correct = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        images = [Image.fromarray(bank.images[bank.q_scene[r]].numpy()) for r in chunk]
        prompts = [PROMPT_TEMPLATE.format(question=bank.q_text[r]) for r in chunk]
        inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
        out = llava.generate(**inputs, max_new_tokens=3, do_sample=False)
        answers = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += [a.strip() == bank.q_answer[r] for a, r in zip(answers, chunk)]
    return by_size(np.array(correct), bank.q_size[rows].numpy())


@torch.no_grad()
def pointing_rate(
    clip: CLIPModel, tokenizer: PreTrainedTokenizerFast, bank: SceneBank, rows: np.ndarray, batch_size: int = 64
) -> dict[str, float]:
    """Share of questions whose top text-scored patch lies in the named object, and the random rate."""
    hits, chance = [], []
    for start in range(0, len(rows), batch_size):
        chunk = torch.as_tensor(rows[start : start + batch_size])
        scores = text_scores(clip, tokenizer, bank.images[bank.q_scene[chunk]], [bank.q_text[r] for r in chunk])
        masks = bank.q_mask[chunk]  # (B, P)
        hits.append(masks[torch.arange(len(chunk)), scores.argmax(-1)].numpy())
        chance.append(masks.float().mean(-1).numpy())
    sizes = bank.q_size[rows].numpy()
    result = {f"rate_{k}": v for k, v in by_size(np.concatenate(hits), sizes).items()}
    result.update({f"random_{k}": v for k, v in by_size(np.concatenate(chance), sizes).items()})
    return result


def text_scores(clip: CLIPModel, tokenizer: PreTrainedTokenizerFast, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """Cosine (B, P) between each text's CLIP embedding and its image's projected final patch tokens."""
    text = clip.text_model(**encode_texts(tokenizer, texts)).pooler_output
    text = F.normalize(clip.text_projection(text), dim=-1)  # (B, D)
    final = encode_vision(clip.vision_model, pixel_values(images)).last_hidden_state[:, 1:]  # (B, P, W)
    patches = F.normalize(clip.visual_projection(final), dim=-1)  # (B, P, D)
    return torch.einsum("bd,bpd->bp", text, patches)


@torch.no_grad()
def visual_only_accuracy(
    llava: LlavaForConditionalGeneration,
    tokenizer: PreTrainedTokenizerFast,
    table: PromptTable,
    bank: SceneBank,
    rows: np.ndarray,
    keep: int,
    batch_size: int = 64,
) -> dict[str, float]:
    """First-token accuracy when the LLM sees only the `keep` patches with most [CLS] attention.

    Kept patches stay in raster order. Also returns the evidence recall: the share of the
    asked-about object's patches among the kept ones. `keep = NUM_PATCHES` gives the unpruned run.
    """
    correct, recall = [], []
    for start in range(0, len(rows), batch_size):
        chunk = torch.as_tensor(rows[start : start + batch_size])
        vision = encode_vision(llava.model.vision_tower, pixel_values(bank.images[bank.q_scene[chunk]]))
        pruned = compress(vision.features, vision.cls_attn, method="fastervlm", budget=keep)  # raster order
        features = pruned.tokens  # (B, K, W)
        kept = pruned.fate == Fate.KEPT  # (B, P)
        batch = answer_batch(table, single_turns(bank, chunk), keep, tokenizer)
        predicted = answer_logits(llava, batch, features)[:, 0].argmax(-1)
        correct.append((predicted == batch.first_answer).numpy())
        masks = bank.q_mask[chunk]  # (B, P)
        recall.append(((masks & kept).sum(-1) / masks.sum(-1)).numpy())
    sizes = bank.q_size[rows].numpy()
    result = {f"accuracy_{k}": v for k, v in by_size(np.concatenate(correct), sizes).items()}
    result.update({f"evidence_recall_{k}": v for k, v in by_size(np.concatenate(recall), sizes).items()})
    return result
