"""Stage 3 of the recipe, the LLaVA: the projector's feature alignment (`align_projector`, on `word_targets`), then
VQA conversations with the auxiliary losses and randomly shortened images (`train_llava`), checkpoints judged by
held-out first-token accuracy (`first_token_accuracy`)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rclib.shapes.clip_stages import GRID_X, GRID_Y
from rclib.shapes.data import (
    LABELS,
    OBJECT_WORDS,
    PAIR_SIDES,
    PromptLayout,
    SceneBank,
    conversation_batch,
    without_lost_evidence,
)
from rclib.shapes.llava_losses import grounding_losses, lens_loss, lm_forward
from rclib.shapes.recipe import SELECTION_TOKENS, TrainConfig
from rclib.shapes.shortening import random_shortening, random_subset
from rclib.shapes.stage import Logger, Stage
from rclib.shapes.world import FAMILIES, GRID_SIZE, NUM_PATCHES


def word_targets(tokenizer, bank: SceneBank, idx: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, P, V) targets: each object patch's colour and shape words, each glyph patch's digit (1), and, graded,
    where the patch lies: "right" / "below" its column / row over the grid's last (0 to 1), "left" / "above" the
    rest, so the projected patches keep their position for the name to gather (without it the projector drops
    it and position questions stay at chance)."""
    target = torch.zeros(len(idx), NUM_PATCHES, vocab_size)
    for name, names in OBJECT_WORDS.items():
        ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(names)))
        labels = bank.patch_labels[name][idx]  # (B, P)
        on = labels < len(names)
        b, p = torch.nonzero(on, as_tuple=True)
        target[b, p, ids[labels[on]]] = 1
    objects = bank.patch_labels["color"][idx] < len(OBJECT_WORDS["color"])  # (B, P)
    for sides, coordinate in zip(PAIR_SIDES, (GRID_X, GRID_Y)):
        later = coordinate / (GRID_SIZE - 1)  # (P,) 0 at the left / top edge, 1 at the right / bottom one
        for side_id, share in zip(tokenizer.convert_tokens_to_ids(list(sides)), (1 - later, later)):
            target[..., side_id] = torch.where(objects, share, 0.0)
    return target


def align_projector(llava, tokenizer, bank: SceneBank, features: torch.Tensor, cfg: TrainConfig, log: Logger) -> None:
    """Stage 3a (LLaVA's feature alignment, dense): each projected patch must score its words (`word_targets`)
    against the LM's input embeddings, background patches none."""
    projector, embeddings = llava.model.multi_modal_projector, llava.get_input_embeddings()
    params = list(projector.parameters()) + list(embeddings.parameters())
    stage = Stage(torch.optim.AdamW(params, lr=cfg.llava_lr, weight_decay=0.01), cfg.align_minutes, cfg.align_steps,
                  cfg.warmup_share)
    generator = torch.Generator().manual_seed(cfg.seed + 3)
    while not stage.done:
        idx = torch.randint(len(bank), (cfg.llava_batch,), generator=generator)
        logits = projector(features[idx].float()) @ embeddings.weight.T  # (B, P, V)
        loss = F.binary_cross_entropy_with_logits(logits, word_targets(tokenizer, bank, idx, logits.shape[-1]))
        stage.update(loss, params)
    log(f"align: {stage.step} steps, loss {loss.item():.4f}")

@torch.no_grad()
def first_token_accuracy(llava, layout: PromptLayout, bank: SceneBank, features: torch.Tensor,
                         keep: int | None = None) -> dict[str, float]:
    """First-answer-token accuracy of each bank question (one per scene), per family and mean: with all tokens, or
    with `keep` uniformly random patches (a fixed draw, so checkpoints are compared on the same inputs)."""
    rows = torch.arange(len(bank.q_scene))
    generator = torch.Generator().manual_seed(0)
    correct = []
    for start in range(0, len(rows), 32):
        chunk = rows[start : start + 32]
        conv = conversation_batch(layout, bank, [[int(r)] for r in chunk])
        weights = None if keep is None else random_subset(len(chunk), keep, generator)
        logits, _, conv = lm_forward(llava, conv, features[bank.q_scene[chunk]].float(), weights=weights)
        correct.append(logits[:, 0].argmax(-1) == conv.targets[:, 0])
    correct = torch.cat(correct).float()
    report = {f: round(correct[bank.q_family == i].mean().item(), 3) for i, f in enumerate(FAMILIES)
              if (bank.q_family == i).any()}
    report["mean"] = round(float(np.mean(list(report.values()))), 3)
    return report


def train_llava(llava, layout: PromptLayout, bank: SceneBank, features: torch.Tensor, eval_bank: SceneBank,
                eval_features: torch.Tensor, cfg: TrainConfig, log: Logger, checkpoint_dir: Path, minutes: float) -> dict:
    """Stage 3b: projector + Llama on answer tokens with the grounding and lens losses, a share of the images
    shortened at random (`random_shortening`); keeps the weights with the best held-out mean of the all-token and
    the random-subset accuracy (both method-neutral)."""
    llava.model.vision_tower.requires_grad_(False)
    params = [p for p in llava.parameters() if p.requires_grad]
    stage = Stage(torch.optim.AdamW(params, lr=cfg.llava_lr, weight_decay=0.01), minutes, cfg.llava_steps,
                  cfg.warmup_share)
    generator = torch.Generator().manual_seed(cfg.seed + 2)
    first_row = torch.searchsorted(bank.q_scene, torch.arange(len(bank) + 1))  # questions of scene s: [first_row[s], first_row[s+1])
    best, best_state = {}, None
    caught = (cfg.word_layer, cfg.grounding_layer, cfg.answer_layer, cfg.option_layer) if cfg.grounding_weight > 0 else ()
    if cfg.lens_weight > 0:
        caught = tuple(sorted(set(caught) | {cfg.word_layer + 1, cfg.grounding_layer + 1, cfg.answer_layer + 1}))

    @functools.cache
    def word_ids(words: tuple[str, ...]) -> torch.Tensor:  # looked up once per word group, not every step
        return torch.tensor(layout.tokenizer.convert_tokens_to_ids(list(words)))

    llava.train()
    while not stage.done:
        scenes = torch.randint(len(bank), (cfg.llava_batch,), generator=generator)
        picked = []
        for s in scenes.tolist():
            start, end = int(first_row[s]), int(first_row[s + 1])
            picked.append((start + torch.randperm(end - start, generator=generator)[: cfg.turns]).tolist())
        conv = conversation_batch(layout, bank, picked)
        foreground = bank.patch_labels["shape"][scenes] < LABELS["shape"] - 1  # [B, P] patches an object covers
        shortening = random_shortening(len(scenes), generator, cfg, foreground) if cfg.shorten_share > 0 else None
        logits, reads, read = lm_forward(llava, conv, features[scenes].float(), caught, shortening)
        conv = read if shortening is None else without_lost_evidence(conv, read)
        answer_loss = F.cross_entropy(logits.flatten(0, 1), conv.targets.flatten(), ignore_index=-100)
        loss = answer_loss
        if cfg.grounding_weight > 0:
            loss = loss + cfg.grounding_weight * grounding_losses(reads, conv, cfg)
        if cfg.lens_weight > 0:
            loss = loss + cfg.lens_weight * lens_loss(llava, reads, conv, cfg, word_ids)
        stage.update(loss, params)
        if stage.step % cfg.eval_every == 0 or stage.done:
            llava.eval()
            accuracy = first_token_accuracy(llava, layout, eval_bank, eval_features)
            shortened = first_token_accuracy(llava, layout, eval_bank, eval_features, keep=SELECTION_TOKENS)
            accuracy["selection"] = round((accuracy["mean"] + shortened["mean"]) / 2, 3)
            log(f"llava step {stage.step}: answer loss {answer_loss.item():.3f} total {loss.item():.3f}, held-out "
                f"first-token accuracy {accuracy}, with {SELECTION_TOKENS} random patches {shortened}"
                + (f"; {stage.skipped} steps skipped (loss or gradient not finite)" if stage.skipped else ""))
            if accuracy["selection"] > best.get("selection", -1.0):
                best, best_state = accuracy, copy.deepcopy(llava.state_dict())
                llava.save_pretrained(checkpoint_dir / "llava-best")
            llava.train()
    llava.load_state_dict(best_state)
    llava.eval()
    return best
