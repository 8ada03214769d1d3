"""Trains the ShapesWorld CLIP and LLaVA from scratch: `python -m rclib.shapes.train [--out DIR] [--quick]`.

Recipe, three stages on one precomputed bank of training scenes (world seed 0):
1. vision: the CLIP vision tower learns per-patch colour and shape labels from the masks (linear
   heads on the penultimate and final layers) and object presence from [CLS], so patch tokens
   encode what the LLM and the text tower must read;
2. text (LiT): with the vision tower locked, the CLIP text tower and both projections learn a dense
   pointing loss (a question or object phrase must score the named object's patches highest) plus
   the usual image-caption contrastive loss;
3. llava: with the same vision tower frozen (so both towers stay identical), (a) the projector learns
   to map object patches onto their colour and shape word embeddings, then (b) the projector and the
   Llama learn multi-turn VQA conversations (loss on the answer words and EOS only), fewer objects
   first, with a grounding loss that pulls one attention head of the named word (e.g. "red" in
   "which shape is red ?") onto the named object's image tokens.
Held-out scenes (seed EVAL_SEED) measure every stage; the best LLaVA checkpoint is shipped.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rclib.shapes.build import ShapesModelConfig, build_all, image_processor, tie_vision_towers
from rclib.shapes.data import SceneBank, encode_texts, make_bank, pixel_values, prompt_table
from rclib.shapes.evaluate import (
    EVAL_SEED,
    answer_batch,
    answer_logits,
    by_size,
    eval_rows,
    lm_hidden,
    pointing_rate,
    single_turns,
    visual_only_accuracy,
    vqa_accuracy,
)
from rclib.shapes.world import COLORS, NUM_PATCHES, SHAPES, WorldConfig

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "data" / "models"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0  # world stream of the training scenes and torch seed
    train_scenes: int = 16000  # precomputed training scenes (all their questions are used)
    eval_scenes: int = 500  # held-out scenes, one question each
    train_world: WorldConfig = field(default_factory=lambda: WorldConfig(min_objects=1))  # 1-2 object scenes feed the curriculum
    eval_world: WorldConfig = field(default_factory=WorldConfig)  # the shipped world: 3-6 objects
    model: ShapesModelConfig = field(default_factory=ShapesModelConfig)
    vision_steps: int = 300  # stage 1: dense per-patch pretraining of the vision tower
    vision_batch: int = 32
    vision_lr: float = 2e-3
    background_weight: float = 0.3  # CE weight of background patches (they are ~85% of patches)
    text_steps: int = 300  # stage 2: LiT text tower against the locked vision tower
    text_batch: int = 128
    text_lr: float = 2e-3
    caption_weight: float = 0.5  # weight of the global image-caption contrastive loss
    align_steps: int = 300  # stage 3a: projector + word embeddings, dense word alignment
    llava_steps: int = 4000  # stage 3: projector + Llama on the VQA answers
    llava_batch: int = 16  # conversations (scenes) per step; small batches, more updates, bind sooner
    turns: int = 6  # questions per conversation (LLaVA-1.5 trains on multi-turn conversations too)
    grounding_weight: float = 1.0  # weight of the attention-grounding loss (0 = off; without it accuracy stalls ~45%)
    grounding_layer: int = 0  # LM layer whose head 0 is pulled onto the asked-about object's image tokens
    grounding_offset: int = 3  # ... from the answer position minus this: 3 = the named word itself
    grounding_share: float = 1.0  # first share of LLaVA steps with the grounding loss
    llava_lr: float = 2e-3
    curriculum_share: float = 0.15  # first share of LLaVA steps uses only scenes with few objects
    curriculum_objects: int = 2
    warmup_share: float = 0.05  # linear warmup share of every stage, then cosine decay to 0
    eval_every: int = 250  # LLaVA steps between held-out evaluations and checkpoints
    keep_fraction: float = 0.1  # visual-only pruning budget for the final report (~10% of patches)
    minutes_budget: float = 55.0  # LLaVA training stops at the first evaluation past this (from the start)


QUICK = dict(
    train_scenes=256, eval_scenes=48, vision_steps=6, vision_batch=16, text_steps=6, text_batch=32,
    align_steps=4, llava_steps=8, llava_batch=16, eval_every=4,
)  # CI smoke run: every stage, every file, well under a minute


def schedule(optimizer: torch.optim.Optimizer, steps: int, warmup_share: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, int(steps * warmup_share))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Logger:
    """Writes timestamped lines to a log file and above the progress bars."""

    def __init__(self, path: Path):
        self.path = path
        self.start = time.time()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def __call__(self, message: str) -> None:
        line = f"[{(time.time() - self.start) / 60:6.2f} min] {message}"
        tqdm.write(line)
        with self.path.open("a") as f:
            f.write(line + "\n")


def patch_loss(logits: torch.Tensor, colors: torch.Tensor, shapes: torch.Tensor, background_weight: float) -> torch.Tensor:
    """CE of per-patch colour and shape heads; logits (B, P, C+1 + S+1), labels (B, P)."""
    color_logits, shape_logits = logits.split([len(COLORS) + 1, len(SHAPES) + 1], dim=-1)
    color_weight = torch.ones(len(COLORS) + 1)
    color_weight[-1] = background_weight
    shape_weight = torch.ones(len(SHAPES) + 1)
    shape_weight[-1] = background_weight
    return F.cross_entropy(color_logits.flatten(0, 1), colors.flatten(), weight=color_weight) + F.cross_entropy(
        shape_logits.flatten(0, 1), shapes.flatten(), weight=shape_weight
    )


@torch.no_grad()
def patch_accuracy(vision, heads: nn.ModuleDict, bank: SceneBank, batch_size: int = 128) -> dict[str, float]:
    """Penultimate-layer head accuracy on object patches (colour, shape) of a bank."""
    color_hits, shape_hits = [], []
    for start in range(0, len(bank), batch_size):
        images = bank.images[start : start + batch_size]
        hidden = vision(pixel_values(images), output_hidden_states=True).hidden_states[-2][:, 1:]
        color_logits, shape_logits = heads["penultimate"](hidden).split([len(COLORS) + 1, len(SHAPES) + 1], dim=-1)
        colors, shapes = bank.patch_colors[start : start + batch_size], bank.patch_shapes[start : start + batch_size]
        on_object = colors < len(COLORS)
        color_hits.append((color_logits.argmax(-1) == colors)[on_object])
        shape_hits.append((shape_logits.argmax(-1) == shapes)[on_object])
    return {"color": torch.cat(color_hits).float().mean().item(), "shape": torch.cat(shape_hits).float().mean().item()}


def clipped_step(loss: torch.Tensor, optimizer, scheduler, params) -> None:
    """One optimiser step on ``loss`` with gradients clipped to norm 1, then one scheduler step."""
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    scheduler.step()


def train_vision(clip, bank: SceneBank, eval_bank: SceneBank, cfg: TrainConfig, log: Logger) -> None:
    """Stage 1: per-patch colour/shape heads on layers -2 and -1, presence head on pooled [CLS]."""
    vision = clip.vision_model
    width = vision.config.hidden_size
    labels = len(COLORS) + 1 + len(SHAPES) + 1
    heads = nn.ModuleDict(
        {"penultimate": nn.Linear(width, labels), "final": nn.Linear(width, labels), "cls": nn.Linear(width, len(COLORS) * len(SHAPES))}
    )
    params = list(vision.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.vision_lr, weight_decay=0.01)
    scheduler = schedule(optimizer, cfg.vision_steps, cfg.warmup_share)
    generator = torch.Generator().manual_seed(cfg.seed)
    vision.train()
    bar = tqdm(range(cfg.vision_steps), desc="1/3 vision (dense)")
    for step in bar:
        idx = torch.randint(len(bank), (cfg.vision_batch,), generator=generator)
        out = vision(pixel_values(bank.images[idx]), output_hidden_states=True)
        colors, shapes = bank.patch_colors[idx], bank.patch_shapes[idx]
        loss = (
            patch_loss(heads["penultimate"](out.hidden_states[-2][:, 1:]), colors, shapes, cfg.background_weight)
            + patch_loss(heads["final"](out.last_hidden_state[:, 1:]), colors, shapes, cfg.background_weight)
            + F.binary_cross_entropy_with_logits(heads["cls"](out.pooler_output), bank.presence[idx])
        )
        clipped_step(loss, optimizer, scheduler, params)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % max(1, cfg.vision_steps // 5) == 0 or step + 1 == cfg.vision_steps:
            vision.eval()
            log(f"vision step {step + 1}: loss {loss.item():.3f}, held-out object-patch accuracy {patch_accuracy(vision, heads, eval_bank)}")
            vision.train()
    vision.eval()
    vision.requires_grad_(False)


@torch.no_grad()
def encode_bank(vision, bank: SceneBank, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Locked vision features of every scene: penultimate / final patch tokens (fp16) and pooled [CLS]."""
    penultimate, final, pooled = [], [], []
    for start in tqdm(range(0, len(bank), batch_size), desc="encode scenes"):
        out = vision(pixel_values(bank.images[start : start + batch_size]), output_hidden_states=True)
        penultimate.append(out.hidden_states[-2][:, 1:].half())
        final.append(out.last_hidden_state[:, 1:].half())
        pooled.append(out.pooler_output)
    return {"penultimate": torch.cat(penultimate), "final": torch.cat(final), "pooled": torch.cat(pooled)}


def text_embeddings(clip, tokenizer, texts: list[str]) -> torch.Tensor:
    """L2-normalised CLIP text embeddings (B, D), pooled at EOS."""
    return F.normalize(clip.text_projection(clip.text_model(**encode_texts(tokenizer, texts)).pooler_output), dim=-1)


def pointing_loss(clip, text: torch.Tensor, final_patches: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """-log of the softmax mass (over patches) on the named object; text (B, D), patches (B, P, W), masks (B, P)."""
    patches = F.normalize(clip.visual_projection(final_patches), dim=-1)  # (B, P, D)
    logits = clip.logit_scale.exp() * torch.einsum("bd,bpd->bp", text, patches)
    return (logits.logsumexp(-1) - logits.masked_fill(~masks, float("-inf")).logsumexp(-1)).mean()


def caption_loss(clip, text: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between captions (B, D) and their images' pooled [CLS] (B, W)."""
    images = F.normalize(clip.visual_projection(pooled), dim=-1)
    logits = clip.logit_scale.exp() * images @ text.T  # (B, B)
    target = torch.arange(len(logits))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def train_text(clip, tokenizer, bank: SceneBank, features: dict, eval_bank: SceneBank, cfg: TrainConfig, log: Logger) -> None:
    """Stage 2 (LiT): text tower + projections against the locked vision tower."""
    params = (
        list(clip.text_model.parameters())
        + list(clip.text_projection.parameters())
        + list(clip.visual_projection.parameters())
        + [clip.logit_scale]
    )
    optimizer = torch.optim.AdamW(params, lr=cfg.text_lr, weight_decay=0.01)
    scheduler = schedule(optimizer, cfg.text_steps, cfg.warmup_share)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    rows_eval = eval_rows(eval_bank)
    clip.text_model.train()
    bar = tqdm(range(cfg.text_steps), desc="2/3 text (LiT)")
    half = cfg.text_batch // 2
    for step in bar:
        rows = torch.randint(len(bank.q_scene), (cfg.text_batch,), generator=generator)
        texts = [bank.q_text[r] for r in rows[:half]] + [bank.q_phrase[r] for r in rows[half:]]
        scenes = bank.q_scene[rows]
        dense = pointing_loss(clip, text_embeddings(clip, tokenizer, texts), features["final"][scenes].float(), bank.q_mask[rows])
        captioned = torch.randint(len(bank), (cfg.text_batch,), generator=generator)
        captions = text_embeddings(clip, tokenizer, [bank.captions[s] for s in captioned])
        loss = dense + cfg.caption_weight * caption_loss(clip, captions, features["pooled"][captioned])
        clipped_step(loss, optimizer, scheduler, params)
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % max(1, cfg.text_steps // 4) == 0 or step + 1 == cfg.text_steps:
            clip.text_model.eval()
            log(f"text step {step + 1}: loss {loss.item():.3f}, held-out pointing {pointing_rate(clip, tokenizer, eval_bank, rows_eval)}")
            clip.text_model.train()
    clip.text_model.eval()


def align_projector(llava, tokenizer, bank: SceneBank, penultimate: torch.Tensor, cfg: TrainConfig, log: Logger) -> None:
    """Stage 3a (LLaVA's feature-alignment stage, dense): each projected object patch must score its
    colour and shape words against the LM's input embeddings, background patches no word, so the
    LM can match a question word to image tokens by plain embedding similarity."""
    projector, embeddings = llava.model.multi_modal_projector, llava.get_input_embeddings()
    color_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(COLORS)))
    shape_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(SHAPES)))
    params = list(projector.parameters()) + list(embeddings.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.llava_lr, weight_decay=0.01)
    scheduler = schedule(optimizer, cfg.align_steps, cfg.warmup_share)
    generator = torch.Generator().manual_seed(cfg.seed + 3)
    bar = tqdm(range(cfg.align_steps), desc="3a llava (align)")
    for step in bar:
        idx = torch.randint(len(bank), (cfg.llava_batch,), generator=generator)
        logits = projector(penultimate[idx].float()) @ embeddings.weight.T  # (B, P, V)
        colors, shapes = bank.patch_colors[idx], bank.patch_shapes[idx]  # (B, P), background = last id
        target = torch.zeros_like(logits)
        on_object = colors < len(COLORS)
        target[on_object, color_ids[colors[on_object]]] = 1
        target[on_object, shape_ids[shapes[on_object]]] = 1
        loss = F.binary_cross_entropy_with_logits(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    log(f"align: {cfg.align_steps} steps, loss {loss.item():.4f}")


@torch.no_grad()
def fast_accuracy(llava, tokenizer, table, bank: SceneBank, penultimate: torch.Tensor, rows: np.ndarray) -> dict[str, float]:
    """First-token accuracy from cached penultimate features (all patches), overall and by size."""
    correct = []
    for start in range(0, len(rows), 128):
        chunk = rows[start : start + 128]
        batch = answer_batch(table, single_turns(bank, chunk), NUM_PATCHES, tokenizer)
        predicted = answer_logits(llava, batch, penultimate[bank.q_scene[chunk]].float())[:, 0].argmax(-1)
        correct.append((predicted == batch.first_answer).numpy())
    return by_size(np.concatenate(correct), bank.q_size[rows].numpy())


def conversation_rows(first_row: torch.Tensor, scene: int, turns: int, generator: torch.Generator) -> torch.Tensor:
    """Up to `turns` distinct question rows about one scene, in random order."""
    start, end = int(first_row[scene]), int(first_row[scene + 1])
    return start + torch.randperm(end - start, generator=generator)[:turns]


def grounding_loss(attention: torch.Tensor, batch, masks: torch.Tensor, image_start: int, offset: int) -> torch.Tensor:
    """-log of one head's attention mass on the asked-about object's image tokens, from the position
    `offset` tokens before each answer position (3: the named word, as in "red ? ASSISTANT :").

    attention (B, H, L, L) of one LM layer; masks (B, T, P) per turn, all-False for missing turns.
    """
    query_pos = batch.target_pos[:, 0::2] - offset  # (B, T), answer-predicting positions minus offset
    head = attention[:, 0]  # (B, L, L)
    rows = head.gather(1, query_pos.clamp(min=0).unsqueeze(-1).expand(-1, -1, head.shape[-1]))  # (B, T, L)
    on_image = rows[..., image_start : image_start + NUM_PATCHES]  # (B, T, P)
    mass = (on_image * masks).sum(-1)  # (B, T)
    valid = masks.any(-1)
    return -(mass[valid] + 1e-6).log().mean()


def train_llava(
    llava, tokenizer, table, bank: SceneBank, penultimate: torch.Tensor, eval_bank: SceneBank,
    eval_penultimate: torch.Tensor, cfg: TrainConfig, log: Logger, checkpoint_dir: Path, deadline: float = math.inf,
) -> dict[str, float]:
    """Stage 3: projector + Llama on answer tokens, frozen vision tower; keeps the best held-out weights."""
    llava.model.vision_tower.requires_grad_(False)
    params = [p for p in llava.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.llava_lr, weight_decay=0.01)
    scheduler = schedule(optimizer, cfg.llava_steps, cfg.warmup_share)
    generator = torch.Generator().manual_seed(cfg.seed + 2)
    few_objects = torch.nonzero(bank.num_objects <= cfg.curriculum_objects).flatten()
    curriculum_steps = int(cfg.llava_steps * cfg.curriculum_share)
    first_row = torch.searchsorted(bank.q_scene, torch.arange(len(bank) + 1))  # questions of scene s: [first_row[s], first_row[s+1])
    rows_eval = eval_rows(eval_bank)
    best = {"all": -1.0}
    best_state = None
    llava.train()
    bar = tqdm(range(cfg.llava_steps), desc="3/3 llava (VQA)")
    for step in bar:
        if step < curriculum_steps:
            scenes = few_objects[torch.randint(len(few_objects), (cfg.llava_batch,), generator=generator)]
        else:
            scenes = torch.randint(len(bank), (cfg.llava_batch,), generator=generator)
        picked = [conversation_rows(first_row, int(s), cfg.turns, generator) for s in scenes]
        conversations = [[(bank.q_text[r], bank.q_answer[r]) for r in rows] for rows in picked]
        batch = answer_batch(table, conversations, NUM_PATCHES, tokenizer)
        hidden, attentions = lm_hidden(llava, batch, penultimate[scenes].float(), with_attentions=cfg.grounding_weight > 0)
        picked_hidden = hidden.gather(1, batch.target_pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (B, T, D)
        logits = llava.lm_head(picked_hidden)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100)
        if cfg.grounding_weight > 0 and step < cfg.grounding_share * cfg.llava_steps:
            masks = torch.zeros(len(picked), batch.target_pos.shape[1] // 2, NUM_PATCHES, dtype=torch.bool)  # (B, T, P)
            for i, rows in enumerate(picked):
                masks[i, : len(rows)] = bank.q_mask[rows]
            image_start = table.ids[conversations[0][0][0]].index(llava.config.image_token_id)
            loss = loss + cfg.grounding_weight * grounding_loss(
                attentions[cfg.grounding_layer], batch, masks, image_start, cfg.grounding_offset
            )
        clipped_step(loss, optimizer, scheduler, params)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.llava_steps:
            llava.eval()
            accuracy = fast_accuracy(llava, tokenizer, table, eval_bank, eval_penultimate, rows_eval)
            log(f"llava step {step + 1}: loss {loss.item():.3f}, held-out first-token accuracy {accuracy}")
            if accuracy["all"] > best["all"]:
                best, best_state = accuracy, copy.deepcopy(llava.state_dict())
                llava.save_pretrained(checkpoint_dir / "llava-best")
            llava.train()
            if time.time() > deadline:
                log(f"llava: minutes budget reached after step {step + 1} of {cfg.llava_steps}; keeping the best checkpoint")
                break
    llava.load_state_dict(best_state)
    llava.eval()
    return best


def save_models(clip, clip_tokenizer, llava, processor, out_dir: Path) -> None:
    """`shapes-clip/` (CLIPModel, its tokenizer, image processor) and `shapes-llava/` (LLaVA, processor)."""
    clip.save_pretrained(out_dir / "shapes-clip")
    clip_tokenizer.save_pretrained(out_dir / "shapes-clip")
    image_processor().save_pretrained(out_dir / "shapes-clip")
    llava.save_pretrained(out_dir / "shapes-llava")
    processor.save_pretrained(out_dir / "shapes-llava")


def final_metrics(clip, clip_tokenizer, llava, processor, table, eval_bank: SceneBank, cfg: TrainConfig) -> dict:
    """The card's three measures on the held-out bank (one question per scene)."""
    rows = eval_rows(eval_bank)
    keep = max(1, round(cfg.keep_fraction * NUM_PATCHES))
    tokenizer = processor.tokenizer
    return {
        "eval": {"seed": EVAL_SEED, "scenes": len(eval_bank), "questions": len(rows)},
        "vqa_accuracy_generate": vqa_accuracy(llava, processor, eval_bank, rows),
        "pointing": pointing_rate(clip, clip_tokenizer, eval_bank, rows),
        "first_token_all_patches": visual_only_accuracy(llava, tokenizer, table, eval_bank, rows, NUM_PATCHES),
        f"first_token_visual_only_keep_{keep}": visual_only_accuracy(llava, tokenizer, table, eval_bank, rows, keep),
    }


def train(out_dir: Path | str = DEFAULT_OUT, quick: bool = False, config: TrainConfig | None = None) -> dict:
    """Trains both models from scratch, saves them under `out_dir`, returns the held-out metrics.

    `quick` shrinks every stage for CI (seconds, meaningless weights, same files).
    """
    cfg = config or TrainConfig()
    if quick:
        cfg = replace(cfg, **QUICK)
    out_dir = Path(out_dir)
    checkpoint_dir = out_dir / "checkpoints"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    log = Logger(out_dir / "train-log.txt")
    torch.manual_seed(cfg.seed)
    log(f"config {json.dumps(asdict(cfg))}")
    started = time.time()

    clip, clip_tokenizer, llava, processor = build_all(cfg.model)
    bank = make_bank(cfg.seed, cfg.train_scenes, cfg.train_world, workers=1 if quick else 2)
    eval_bank = make_bank(EVAL_SEED, cfg.eval_scenes, cfg.eval_world, workers=1)
    log(f"scenes: {len(bank)} train ({len(bank.q_scene)} questions), {len(eval_bank)} held-out (seed {EVAL_SEED})")

    train_vision(clip, bank, eval_bank, cfg, log)
    tie_vision_towers(clip, llava)
    clip.save_pretrained(checkpoint_dir / "clip-vision-stage")
    features = encode_bank(clip.vision_model, bank)
    eval_features = encode_bank(clip.vision_model, eval_bank)

    train_text(clip, clip_tokenizer, bank, features, eval_bank, cfg, log)
    clip.save_pretrained(checkpoint_dir / "clip-text-stage")

    tokenizer = processor.tokenizer
    table = prompt_table(tokenizer, bank.q_text + eval_bank.q_text, bank.q_answer + eval_bank.q_answer)
    align_projector(llava, tokenizer, bank, features["penultimate"], cfg, log)
    deadline = started + 60 * cfg.minutes_budget
    train_llava(
        llava, tokenizer, table, bank, features["penultimate"], eval_bank, eval_features["penultimate"], cfg, log,
        checkpoint_dir, deadline,
    )
    assert all(
        torch.equal(a, b) for a, b in zip(clip.vision_model.state_dict().values(), llava.model.vision_tower.state_dict().values())
    ), "the LLaVA vision tower drifted from the CLIP one; keep it frozen in stage 3"
    save_models(clip, clip_tokenizer, llava, processor, out_dir)
    train_minutes = (time.time() - started) / 60
    log(f"trained in {train_minutes:.1f} min; measuring held-out metrics")
    metrics = final_metrics(clip, clip_tokenizer, llava, processor, table, eval_bank, cfg)
    metrics["train_minutes"] = round(train_minutes, 1)
    metrics["config"] = asdict(cfg)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log(f"metrics {json.dumps({k: v for k, v in metrics.items() if k != 'config'})}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default {DEFAULT_OUT}; a temp folder with --quick)")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: a few steps of every stage")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's step count")
    parser.add_argument("--minutes-budget", type=float, default=None, help="stop LLaVA training past this many minutes")
    args = parser.parse_args(argv)
    cfg = TrainConfig()
    if args.steps_scale != 1.0:
        cfg = replace(
            cfg,
            vision_steps=max(1, int(cfg.vision_steps * args.steps_scale)),
            text_steps=max(1, int(cfg.text_steps * args.steps_scale)),
            llava_steps=max(1, int(cfg.llava_steps * args.steps_scale)),
        )
    if args.minutes_budget is not None:
        cfg = replace(cfg, minutes_budget=args.minutes_budget)
    out = args.out or (Path(tempfile.mkdtemp(prefix="shapes-quick-")) if args.quick else DEFAULT_OUT)
    train(out, quick=args.quick, config=cfg)
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
