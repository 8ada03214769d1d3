"""Trains the ShapesWorld CLIP and LLaVA from scratch: `python -m rclib.shapes.train [--out DIR] [--quick]`.

Recipe, on one precomputed bank of training scenes (world seed 0), every stage bounded in minutes
(the learning rate follows warmup + cosine over the stage's share of time or steps, whichever runs
out first), so a run always ends and saves:
1. clip: the vision tower is pretrained as CLIP is, contrastively through its [CLS] token against
   the text tower's caption embedding (symmetric InfoNCE), plus linear heads that read each patch's
   colour, shape, digit (penultimate and final layer) and grid position (penultimate), so the
   patch tokens carry what the LLM and the text score must read;
2. text (LiT): vision tower locked, the text tower and both projections learn the text score RC
   reads (`TransformersTextTower.embed_text` / `project_patches`, post-layernorm on, `text_similarity`):
   a question's softmax over the 576 patches must put its mass on the named object(s), plus the
   caption InfoNCE;
3. llava: vision tower frozen (identical in both models), (a) the projector learns to map object
   patches onto their colour / shape / digit word embeddings and, graded, onto "left" / "right" /
   "above" / "below" by where they lie (`word_targets`), then (b) the projector and the
   Llama learn multi-turn VQA conversations (loss on the answer words and EOS), with attention
   targets for the hops an answer takes (`grounding_losses`: a name's words onto the named object's
   image tokens and onto its digit patches, the answer position onto the names, a position
   question's relation word and a choice question's chosen option, each option onto its letter, a
   position question's answer position onto its relation word when the relation holds, else onto itself;
   computed from the layers' own q / k projections: no attention switch) and a logit lens on what
   those hops must carry (`lens_loss`: the LM's own lm_head, on the hidden state after a hop, must
   score the named object's words and its half of the image, the first named object's side of the second,
   an option's letter).
Held-out scenes (seed EVAL_SEED) measure every stage; the best LLaVA checkpoint is shipped, then
`rclib.shapes.evaluate.measure` writes metrics.json through the real loading and generation path.
"""

from __future__ import annotations

import argparse
import copy
import functools
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
from transformers import CLIPModel, LlavaForConditionalGeneration
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from rclib.filters import outlier_count
from rclib.models.llava import splice_image_tokens
from rclib.models.text import TransformersTextTower, text_similarity
from rclib.models.vision import encode_vision
from rclib.shapes.build import (
    ShapesModelConfig,
    build_all,
    image_processor,
    tie_vision_towers,
)
from rclib.shapes.data import (
    image_lengths,
    shorten,
    without_lost_evidence,
    LABELS,
    OBJECT_WORDS,
    PAIR_SIDES,
    PromptLayout,
    SceneBank,
    conversation_batch,
    make_bank,
    pixel_values,
)
from rclib.shapes.evaluate import EVAL_SEED, cls_concentration, measure
from rclib.shapes.world import (
    FAMILIES,
    GRID_SIZE,
    LETTERS,
    NUM_PATCHES,
    WorldConfig,
)

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "data" / "models"
SELECTION_TOKENS = 64  # checkpoints are also judged with this many uniformly random patches (no method's selection)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0  # world stream of the training scenes and torch seed
    train_scenes: int = 4000  # precomputed training scenes (encoding costs ~40 ms each on 2 cores)
    questions_per_scene: int = 10  # training questions per scene, families round-robin
    eval_scenes: int = 300  # held-out scenes for the in-training checks, one question each
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ShapesModelConfig = field(default_factory=ShapesModelConfig)
    total_minutes: float = 86.0  # the whole run, final measurement included (the CLIP stages take ~22 min of it)
    measure_minutes: float = 5.0  # reserved at the end for `evaluate.measure`
    clip_minutes: float = 14.0  # stage 1
    clip_steps: int = 100_000  # stage caps in steps (the minutes usually bind first)
    clip_batch: int = 24
    clip_lr: float = 2e-3
    background_weight: float = 0.3  # CE weight of the "none" class of the patch heads (most patches)
    text_minutes: float = 4.0  # stage 2
    text_steps: int = 100_000
    text_batch: int = 64
    text_lr: float = 2e-3
    caption_weight: float = 0.5  # weight of the caption InfoNCE in stage 2
    align_minutes: float = 2.0  # stage 3a
    align_steps: int = 2000  # ~0.5 min: fewer (400) leave the projected patches without their position
    llava_steps: int = 100_000  # stage 3b runs until the total budget's deadline
    llava_batch: int = 8  # conversations (scenes) per step: small batches, more updates per CPU second
    turns: int = 10  # questions per conversation: the 576 image tokens dominate a step's cost, so every
    # scene's questions in one conversation give the most answers per CPU second
    llava_lr: float = 2e-3
    grounding_weight: float = 1.0  # weight of each attention-grounding loss (0 = off)
    grounding_layer: int = 1  # LM layer whose head 0, at a name's last word, is pulled onto the named object
    word_layer: int = 0  # LM layer whose head 0 is pulled onto every object sharing the name's last word and
    # whose head 1 onto the name's first word ("red" of "red circle"), so layer 1 can join the two
    answer_layer: int = 2  # LM layer whose head k, at the answer position, is pulled onto the k-th name's last word
    # (k = 0, 1) and whose head 2 onto a position question's relation word
    option_layer: int = 3  # LM layer whose head 0, at the answer position, is pulled onto the chosen option word
    # and whose head 1 (the verdict) onto a position question's relation word when it holds, else onto itself;
    # the word layer's head 2 pulls each option word of a choice question onto its letter, the grounding
    # layer's head 1 a name's last word onto that object's digit patches. Tried and dropped (each slowed
    # every family down, attribute at 0.10-0.25 after 1,650-1,950 steps instead of 0.95): pulling the answer
    # position onto the chosen option in the answer layer (before it knows the colour), and linear probes
    # reading the named objects' centres.
    lens_weight: float = 1.0  # logit-lens loss on the value path: lm_head on the hidden state at a name's last word
    # after the grounding layer, and at the answer position after the answer layer, must score the named
    # object's colour, shape and digit (the digit alone took glyph to 0.88 but held attribute at 0.2), and
    # more words where the answer needs them: see lens_loss
    shorten_share: float = 0.5  # share of training conversations whose image the LM reads shortened (`random_shortening`):
    # method-neutral, so the LM reads any order-preserving subset or merge of the patches as LLaVA's LM reads a
    # compressed image, without favouring any method's selection
    shorten_min_tokens: int = 8  # smallest random budget; budgets are log-uniform in [shorten_min_tokens, P]
    merge_share: float = 0.5  # share of the shortened images whose left-out patches join random groups (means) instead of
    # being dropped
    llava_from: str | None = None  # a saved LLaVA folder (a run's shapes-llava or checkpoints/llava-best): stage 3b
    # continues from it (stage 3a skipped); needs clip_from, the CLIP its vision tower was tied to
    clip_from: str | None = None  # a saved CLIPModel folder: skip stages 1-2 and start from it
    warmup_share: float = 0.05  # linear warmup share of every stage, then cosine decay to 0
    eval_every: int = 150  # LLaVA steps between held-out checks and checkpoints


QUICK = dict(
    train_scenes=48, questions_per_scene=4, eval_scenes=20, total_minutes=5.0, measure_minutes=1.0,
    clip_steps=3, clip_batch=8, text_steps=3, text_batch=8, align_steps=2, llava_steps=3, llava_batch=4, turns=2,
    eval_every=2,
)  # CI smoke run: every stage, every file, well under a minute


class Logger:
    """Writes timestamped lines to a log file and stdout."""

    def __init__(self, path: Path):
        self.path = path
        self.start = time.time()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def __call__(self, message: str) -> None:
        line = f"[{(time.time() - self.start) / 60:6.2f} min] {message}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


class Stage:
    """A training stage bounded by `minutes` and `steps`: progress in [0, 1] is the larger share used,
    the learning rate follows linear warmup then cosine decay over that progress."""

    def __init__(self, optimizer: torch.optim.Optimizer, minutes: float, steps: int, warmup_share: float):
        self.optimizer, self.seconds, self.steps, self.warmup = optimizer, 60 * minutes, steps, warmup_share
        self.base = [group["lr"] for group in optimizer.param_groups]
        self.start, self.step = time.time(), 0

    @property
    def progress(self) -> float:
        return max(self.step / self.steps, (time.time() - self.start) / max(self.seconds, 1e-9))

    @property
    def done(self) -> bool:
        return self.progress >= 1

    def update(self, loss: torch.Tensor, params) -> None:
        """One step on `loss`: gradients clipped to norm 1, learning rate set from the progress."""
        p = self.progress
        factor = (p + 1e-3) / self.warmup if p < self.warmup else 0.5 * (1 + math.cos(math.pi * (p - self.warmup) / (1 - self.warmup)))
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * min(1.0, factor)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.optimizer.step()
        self.step += 1


def patch_heads(width: int) -> nn.ModuleDict:
    """Linear per-patch classifiers: LABELS on the penultimate and final layer, grid x / y on the penultimate."""
    heads = {f"penultimate_{name}": nn.Linear(width, count) for name, count in LABELS.items()}
    heads |= {f"final_{name}": nn.Linear(width, count) for name, count in LABELS.items()}
    heads |= {"penultimate_x": nn.Linear(width, GRID_SIZE), "penultimate_y": nn.Linear(width, GRID_SIZE)}
    return nn.ModuleDict(heads)


GRID_X = torch.arange(NUM_PATCHES) % GRID_SIZE  # (P,) raster order
GRID_Y = torch.arange(NUM_PATCHES) // GRID_SIZE


def patch_losses(heads: nn.ModuleDict, penultimate: torch.Tensor, final: torch.Tensor, labels: dict[str, torch.Tensor],
                 background_weight: float) -> torch.Tensor:
    """Sum of the heads' cross-entropies; tokens (B, P, C), labels (B, P) with the last class down-weighted."""
    loss = 0.0
    for layer, tokens in (("penultimate", penultimate), ("final", final)):
        for name, count in LABELS.items():
            weight = torch.ones(count)
            weight[-1] = background_weight
            logits = heads[f"{layer}_{name}"](tokens)  # (B, P, count)
            loss = loss + F.cross_entropy(logits.flatten(0, 1), labels[name].flatten(), weight=weight)
    B = penultimate.shape[0]
    for axis, target in (("x", GRID_X), ("y", GRID_Y)):
        logits = heads[f"penultimate_{axis}"](penultimate)
        loss = loss + F.cross_entropy(logits.flatten(0, 1), target.repeat(B))
    return loss


def caption_loss(logit_scale: torch.Tensor, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised image (B, D) and caption (B, D) embeddings."""
    logits = logit_scale.exp() * image @ text.T  # (B, B)
    target = torch.arange(len(logits))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def image_embeddings(clip, last_hidden_state: torch.Tensor) -> torch.Tensor:
    """CLIP's image embedding (B, D) from the final tokens (B, 1 + P, C): post-layernormed [CLS], projected."""
    return F.normalize(clip.visual_projection(clip.vision_model.post_layernorm(last_hidden_state[:, 0])), dim=-1)


@torch.no_grad()
def vision_report(vision, heads: nn.ModuleDict, bank: SceneBank, batch_size: int = 50) -> dict[str, float]:
    """Held-out penultimate-head accuracy on object patches (digit: on glyph patches), [CLS] concentration
    and the LOF outlier share of [CLS] attention (RC's visual filter)."""
    hits = {name: [] for name in LABELS}
    attn = []
    for start in range(0, len(bank), batch_size):
        out = encode_vision(vision, pixel_values(bank.images[start : start + batch_size]))
        attn.append(out.cls_attn)
        for name, count in LABELS.items():
            labels = bank.patch_labels[name][start : start + batch_size]
            predicted = heads[f"penultimate_{name}"](out.features).argmax(-1)
            hits[name].append((predicted == labels)[labels < count - 1])
    attn = torch.cat(attn)
    report = {name: round(torch.cat(h).float().mean().item(), 3) for name, h in hits.items()}
    report |= {k: round(v, 3) for k, v in cls_concentration(attn).items()}
    report["lof_share"] = round(outlier_count(attn).float().mean().item() / NUM_PATCHES, 3)
    return report


def train_clip(clip, tower: TransformersTextTower, bank: SceneBank, eval_bank: SceneBank, cfg: TrainConfig, log: Logger):
    """Stage 1: CLIP contrastive through [CLS] + dense patch heads, vision and text towers together."""
    vision = clip.vision_model
    heads = patch_heads(vision.config.hidden_size)
    params = list(clip.parameters()) + list(heads.parameters())
    stage = Stage(torch.optim.AdamW(params, lr=cfg.clip_lr, weight_decay=0.01), cfg.clip_minutes, cfg.clip_steps,
                  cfg.warmup_share)
    generator = torch.Generator().manual_seed(cfg.seed)
    clip.train()
    report_every = 40
    while not stage.done:
        idx = torch.randint(len(bank), (cfg.clip_batch,), generator=generator)
        out = vision(pixel_values(bank.images[idx]), output_hidden_states=True)
        labels = {name: values[idx] for name, values in bank.patch_labels.items()}
        dense = patch_losses(heads, out.hidden_states[-2][:, 1:], out.last_hidden_state[:, 1:], labels,
                             cfg.background_weight)
        captions = tower.embed_text([bank.captions[i] for i in idx])
        contrastive = caption_loss(clip.logit_scale, image_embeddings(clip, out.last_hidden_state), captions)
        stage.update(dense + contrastive, params)
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        if stage.step % report_every == 0 or stage.done:
            clip.eval()
            log(f"clip step {stage.step}: dense {dense.item():.3f} contrastive {contrastive.item():.3f}, held-out "
                f"{vision_report(vision, heads, eval_bank)}")
            clip.train()
    clip.eval()
    clip.requires_grad_(False)


@torch.no_grad()
def encode_bank(vision, bank: SceneBank, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Locked vision outputs of every scene (fp16): LLaVA's features (N, P, C), final tokens (N, 1 + P, C)."""
    features, final = [], []
    for start in range(0, len(bank), batch_size):
        out = encode_vision(vision, pixel_values(bank.images[start : start + batch_size]))
        features.append(out.features.half())
        final.append(out.last_hidden_state.half())
    return {"features": torch.cat(features), "final": torch.cat(final)}


def pointing_loss(tower: TransformersTextTower, logit_scale: torch.Tensor, questions: list[str], final: torch.Tensor,
                  targets: torch.Tensor) -> torch.Tensor:
    """-log of the softmax mass (over patches) of RC's text score on the target; final (B, 1 + P, C), targets (B, P)."""
    scores = text_similarity(tower.embed_text(questions), tower.project_patches(final))  # (B, P)
    logits = logit_scale.exp() * scores
    return (logits.logsumexp(-1) - logits.masked_fill(~targets, float("-inf")).logsumexp(-1)).mean()


@torch.no_grad()
def pointing_rate(tower: TransformersTextTower, bank: SceneBank, final: torch.Tensor, rows: torch.Tensor,
                  post_layernorm: bool = True) -> float:
    """Share of question rows whose top text-scored patch lies on a named object."""
    hits = []
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        patches = tower.project_patches(final[bank.q_scene[chunk]].float(), post_layernorm)
        scores = text_similarity(tower.embed_text([bank.q_text[r] for r in chunk]), patches)
        named = bank.q_named[chunk].any(1)  # (B, P)
        hits.append(named[torch.arange(len(chunk)), scores.argmax(-1)])
    return torch.cat(hits).float().mean().item()


def named_rows(bank: SceneBank) -> torch.Tensor:
    """Question rows that name an object (all but negative existence questions)."""
    return torch.nonzero(bank.q_named.any(-1).any(-1)).flatten()


def train_text(clip, tower: TransformersTextTower, bank: SceneBank, features: dict, eval_bank: SceneBank,
               eval_features: dict, cfg: TrainConfig, log: Logger) -> None:
    """Stage 2 (LiT): text tower + projections + temperature against the locked vision tower."""
    modules = (clip.text_model, clip.text_projection, clip.visual_projection)
    for module in modules:
        module.requires_grad_(True)
    clip.logit_scale.requires_grad_(True)
    params = [p for m in modules for p in m.parameters()] + [clip.logit_scale]
    stage = Stage(torch.optim.AdamW(params, lr=cfg.text_lr, weight_decay=0.01), cfg.text_minutes, cfg.text_steps,
                  cfg.warmup_share)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    rows, eval_named = named_rows(bank), named_rows(eval_bank)
    clip.text_model.train()
    while not stage.done:
        picked = rows[torch.randint(len(rows), (cfg.text_batch,), generator=generator)]
        scenes = bank.q_scene[picked]
        dense = pointing_loss(tower, clip.logit_scale, [bank.q_text[r] for r in picked], features["final"][scenes].float(),
                              bank.q_named[picked].any(1))
        captioned = torch.randint(len(bank), (cfg.text_batch,), generator=generator)
        captions = tower.embed_text([bank.captions[s] for s in captioned])
        image = image_embeddings(clip, features["final"][captioned, :1].float())
        loss = dense + cfg.caption_weight * caption_loss(clip.logit_scale, image, captions)
        stage.update(loss, params)
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        if stage.step % 50 == 0 or stage.done:
            clip.text_model.eval()
            rate = pointing_rate(tower, eval_bank, eval_features["final"], eval_named)
            log(f"text step {stage.step}: loss {loss.item():.3f}, held-out pointing {rate:.3f}")
            clip.text_model.train()
    clip.eval()
    clip.requires_grad_(False)


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


def head_attention(attention, hidden: torch.Tensor, position_embeddings, query_pos: torch.Tensor,
                   attention_mask: torch.Tensor, head: int) -> torch.Tensor:
    """One head's attention probabilities (B, Q, L) from positions query_pos (B, Q), as the layer computes
    them (its q / k projections, rotary embedding, causal and padding masks). hidden (B, L, D): the
    layer's attention input (after its input layernorm)."""
    B, L, _ = hidden.shape
    d = attention.head_dim
    q = attention.q_proj(hidden).view(B, L, -1, d).transpose(1, 2)  # (B, H, L, d)
    k = attention.k_proj(hidden).view(B, L, -1, d).transpose(1, 2)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    q = q[:, head].gather(1, query_pos.clamp(min=0)[..., None].expand(-1, -1, d))  # (B, Q, d)
    scores = q @ k[:, head].transpose(1, 2) * attention.scaling  # (B, Q, L)
    keys = torch.arange(L)
    allowed = (keys <= query_pos[..., None]) & attention_mask[:, None, :].bool()
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1)


def grounding_loss(attention: torch.Tensor, image_start: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """-log of the attention mass (B, Q, L) that each valid query (B, Q) puts on its image tokens masks (B, Q, K);
    a query whose mask is empty (its object cut from a shortened image) has no target."""
    B, Q, L = attention.shape
    K = masks.shape[-1]
    image_pos = (image_start[:, None, None] + torch.arange(K)).clamp(max=L - 1).expand(B, Q, K)  # past K_b: masked out
    mass = (attention.gather(2, image_pos) * masks).sum(-1)  # (B, Q)
    valid = valid & masks.any(-1)
    return -(mass[valid] + 1e-6).log().mean() if valid.any() else attention.new_zeros(())


def random_shortening(batch: int, generator: torch.Generator, cfg: TrainConfig) -> torch.Tensor:
    """Mixing weights (B, K, P) of a method-neutral shortened image per conversation: token k of row b is
    weights[b, k] @ patches, rows of zeros past K_b. With probability 1 - shorten_share a row keeps every patch
    (the identity). Otherwise K_b is log-uniform in [shorten_min_tokens, P], the K_b anchors are uniformly random
    patches in raster order, and either the other patches are dropped (a random subset), or, with probability
    merge_share, each of them joins a uniformly random anchor with a probability u_b ~ U(0, 1) (else dropped) and
    each token is the mean of its group. Nothing here reads a score, a question, an answer or any method's rule."""
    rows = []
    for _ in range(batch):
        if torch.rand((), generator=generator) >= cfg.shorten_share:
            rows.append(torch.eye(NUM_PATCHES))
            continue
        low, high = math.log(cfg.shorten_min_tokens), math.log(NUM_PATCHES)
        k = int(math.exp(low + (high - low) * torch.rand((), generator=generator).item()))
        anchors = torch.randperm(NUM_PATCHES, generator=generator)[:k].sort().values
        group = torch.full((NUM_PATCHES,), -1)
        group[anchors] = torch.arange(k)
        if torch.rand((), generator=generator) < cfg.merge_share:
            joins = (group < 0) & (torch.rand(NUM_PATCHES, generator=generator) < torch.rand((), generator=generator))
            group[joins] = torch.randint(k, (int(joins.sum()),), generator=generator)
        member = torch.nonzero(group >= 0).flatten()
        weights = torch.zeros(k, NUM_PATCHES)
        weights[group[member], member] = 1
        rows.append(weights / weights.sum(-1, keepdim=True))
    out = torch.zeros(batch, max(len(w) for w in rows), NUM_PATCHES)
    for b, weights in enumerate(rows):
        out[b, : len(weights)] = weights
    return out


def onto_position_loss(attention: torch.Tensor, target_pos: torch.Tensor) -> torch.Tensor:
    """-log of the attention (B, Q, L) each query puts on its target position (B, Q), over those >= 0."""
    valid = target_pos >= 0
    picked = attention.gather(2, target_pos.clamp(min=0)[..., None]).squeeze(-1)
    return -(picked[valid] + 1e-6).log().mean() if valid.any() else attention.new_zeros(())


def lm_forward(llava, conv, features: torch.Tensor, caught_layers: tuple[int, ...] = (), weights: torch.Tensor | None = None):
    """Next-token logits (B, 2T, V) at the answer positions, per layer in `caught_layers` what its attention read
    (attention module, its input hidden states, its position embeddings), and the conversations as the LM read
    them. features (B, P, C); weights (B, K, P) shortens each row's image to weights @ features (`shorten`), None
    keeps every patch."""
    original, n_output = conv, torch.full((len(features),), NUM_PATCHES)
    if weights is not None:
        features, conv, n_output = weights @ features, shorten(conv, weights), image_lengths(weights)
    embeds, mask = splice_image_tokens(llava, original.ids, original.attention_mask, features, n_output, NUM_PATCHES)
    assert torch.equal(mask, conv.attention_mask), "conversations are laid out left-padded around one image run"
    language_model = llava.model.language_model
    caught = {layer: {} for layer in caught_layers}
    hooks = [language_model.layers[layer].self_attn.register_forward_pre_hook(
        lambda module, args, kwargs, into=into: into.update(kwargs), with_kwargs=True) for layer, into in caught.items()]
    try:
        hidden = language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=conv.position_ids).last_hidden_state
    finally:
        for hook in hooks:
            hook.remove()
    picked = hidden.gather(1, conv.target_pos[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, 2T, D)
    reads = {layer: (language_model.layers[layer].self_attn, kw["hidden_states"], kw["position_embeddings"])
             for layer, kw in caught.items()}
    return llava.lm_head(picked), reads, conv


def grounding_losses(reads: dict, conv, cfg: TrainConfig) -> torch.Tensor:
    """Attention targets, each one hop of the answer (-log of the attention mass on the target):
    word layer: head 0 at each name's last word onto every object sharing that word, head 1 onto the
    name's first word, head 2 at each option word of a choice question onto its letter;
    grounding layer: head 0 at the last word onto the named object, head 1 onto its digit patches;
    answer layer: head k at each answer position onto the k-th name's last word, head 2 onto a position
    question's relation word; option layer: head 0 at the answer position onto a choice question's option
    word that names the object's colour, head 1 at a position question's answer position onto its relation
    word when the relation holds and onto itself when not (the verdict: the side-of lens has put the first
    object's side there, and a query carrying "left" meets the key of the word "left", so the yes / no
    becomes a match of two words instead of a mapping the MLPs must find)."""
    query = conv.name_pos.flatten(1)  # (B, Q)
    valid = query >= 0

    def attention(layer: int, head: int, at: torch.Tensor) -> torch.Tensor:
        module, hidden, position_embeddings = reads[layer]
        return head_attention(module, hidden, position_embeddings, at, conv.attention_mask, head)

    word_objects = grounding_loss(attention(cfg.word_layer, 0, query), conv.image_start, conv.coarse.flatten(1, 2), valid)
    first_word = onto_position_loss(attention(cfg.word_layer, 1, query), conv.previous_pos.flatten(1))
    options = conv.option_pos.flatten(1)  # (B, T * letters)
    option_letter = onto_position_loss(attention(cfg.word_layer, 2, options), conv.letter_pos.flatten(1))
    named_object = grounding_loss(attention(cfg.grounding_layer, 0, query), conv.image_start, conv.named.flatten(1, 2), valid)
    glyph = conv.glyph.flatten(1, 2)  # (B, Q, P)
    digit = grounding_loss(attention(cfg.grounding_layer, 1, query), conv.image_start, glyph, valid & glyph.any(-1))
    answer_pos = conv.target_pos[:, 0::2]  # (B, T) positions that predict each answer
    to_names = sum(onto_position_loss(attention(cfg.answer_layer, k, answer_pos), conv.name_pos[..., k])
                   for k in range(conv.name_pos.shape[-1]))
    relation = onto_position_loss(attention(cfg.answer_layer, 2, answer_pos), conv.relation_pos)
    chosen = onto_position_loss(attention(cfg.option_layer, 0, answer_pos), conv.chosen_pos)
    verdict = onto_position_loss(attention(cfg.option_layer, 1, answer_pos), conv.verdict_pos)
    return word_objects + first_word + option_letter + named_object + digit + to_names + relation + chosen + verdict


def lens_loss(llava, reads: dict, conv, cfg: TrainConfig, word_ids) -> torch.Tensor:
    """Logit lens on the value path, each term a cross-entropy of lm_head over a few words, on the hidden
    state entering the layer after the one named:
    grounding layer, at each name's last word: that object's colour, shape and digit, and the half of the image
    it lies in along x ("left" / "right") and y ("above" / "below"), so the name carries where the object is;
    answer layer, at each answer position: the first named object's colour, shape and digit, and, when two
    objects are named, the first one's side of the second along x ("left" / "right") and y ("above" / "below");
    word layer, at each option word of a choice question: its letter.
    word_ids(words: tuple) -> their token ids."""
    def hidden_at(layer: int, at: torch.Tensor) -> torch.Tensor:
        hidden = reads[layer + 1][1]  # (B, L, D) after `layer`, normalised as the next layer reads it
        return hidden.gather(1, at.clamp(min=0)[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, Q, D)

    def term(picked: torch.Tensor, valid: torch.Tensor, words, target: torch.Tensor) -> torch.Tensor:
        valid = valid & (target >= 0)
        if not valid.any():
            return picked.new_zeros(())
        return F.cross_entropy(llava.lm_head(picked[valid])[:, word_ids(words)], target[valid])

    names, answers, options = conv.name_pos.flatten(1), conv.target_pos[:, 0::2], conv.option_pos.flatten(1)
    at_names, at_answers = hidden_at(cfg.grounding_layer, names), hidden_at(cfg.answer_layer, answers)
    loss = conv.name_pos.new_zeros((), dtype=torch.float)
    for kind, words in enumerate(OBJECT_WORDS.values()):
        loss = loss + term(at_names, names >= 0, words, conv.object_words.flatten(1, 2)[..., kind])
        loss = loss + term(at_answers, answers >= 0, words, conv.object_words[:, :, 0, kind])
    for axis, sides in enumerate(PAIR_SIDES):
        loss = loss + term(at_names, names >= 0, sides, conv.name_halves.flatten(1, 2)[..., axis])
        loss = loss + term(at_answers, answers >= 0, sides, conv.pair_sides[..., axis])
    letters = torch.arange(len(LETTERS)).repeat(conv.option_pos.shape[1])  # option k's letter is LETTERS[k]
    return loss + term(hidden_at(cfg.word_layer, options), options >= 0, LETTERS, letters.expand_as(options))


def random_subset(batch: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Weights (B, k, P) keeping k uniformly random patches per row, in raster order."""
    anchors = torch.stack([torch.randperm(NUM_PATCHES, generator=generator)[:k].sort().values for _ in range(batch)])
    return F.one_hot(anchors, NUM_PATCHES).float()


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
        shortening = random_shortening(len(scenes), generator, cfg) if cfg.shorten_share > 0 else None
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
                f"first-token accuracy {accuracy}, with {SELECTION_TOKENS} random patches {shortened}")
            if accuracy["selection"] > best.get("selection", -1.0):
                best, best_state = accuracy, copy.deepcopy(llava.state_dict())
                llava.save_pretrained(checkpoint_dir / "llava-best")
            llava.train()
    llava.load_state_dict(best_state)
    llava.eval()
    return best


RUN_OUT = Path("out/shapes-models")  # where a run writes by default: never the shipped DEFAULT_OUT
RUN_OUTPUTS = ("shapes-clip", "shapes-llava", "checkpoints", "train-log.txt", "metrics.json")  # a run's files


def check_new_run(out_dir: Path) -> None:
    """Refuse an ``out_dir`` holding what a run writes (models, checkpoints, log, metrics), before training: a run
    never writes over models it did not make."""
    taken = [name for name in RUN_OUTPUTS if (out_dir / name).exists()]
    if taken:
        raise ValueError(f"{str(out_dir)!r} already holds {', '.join(taken)} of another run: pass a new or empty "
                         f"folder (to ship a finished run, copy its shapes-clip/ and shapes-llava/ into {DEFAULT_OUT})")


def save_models(clip, clip_tokenizer, llava, processor, out_dir: Path) -> None:
    """`shapes-clip/` (CLIPModel, its tokenizer, image processor) and `shapes-llava/` (LLaVA, processor), bound by
    one manifest (`rclib.models.manifest`). Both are written into a staging folder and then moved into `out_dir`, so
    an interrupt leaves no half-written model; a model folder already there is never replaced."""
    import shutil

    from rclib.models.manifest import LLAVA, TEXT_TOWER, write_manifest

    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=out_dir))
    try:
        clip.save_pretrained(staging / TEXT_TOWER)
        clip_tokenizer.save_pretrained(staging / TEXT_TOWER)
        image_processor().save_pretrained(staging / TEXT_TOWER)
        llava.save_pretrained(staging / LLAVA)
        processor.save_pretrained(staging / LLAVA)
        write_manifest(staging)
        for name in (TEXT_TOWER, LLAVA):
            if (out_dir / name).exists():
                raise ValueError(f"{str(out_dir / name)!r} appeared while training: this run's models stay unsaved "
                                 "rather than replace it; pass a new folder")
            (staging / name).rename(out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def train(out_dir: Path | str = RUN_OUT, quick: bool = False, config: TrainConfig | None = None) -> dict:
    """Trains both models from scratch, saves them under `out_dir` (new or empty of a run's files), returns the
    held-out metrics.

    `quick` shrinks every stage for CI (seconds, meaningless weights, same files).
    """
    cfg = config or TrainConfig()
    if quick:
        cfg = replace(cfg, **QUICK)
    out_dir = Path(out_dir)
    check_new_run(out_dir)
    checkpoint_dir = out_dir / "checkpoints"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    log = Logger(out_dir / "train-log.txt")
    torch.manual_seed(cfg.seed)
    log(f"config {json.dumps(asdict(cfg))}")
    started = time.time()

    clip, clip_tokenizer, llava, processor = build_all(cfg.model)
    tower = TransformersTextTower(clip, clip_tokenizer)
    workers = 1 if quick else 2
    bank = make_bank(cfg.seed, cfg.train_scenes, cfg.questions_per_scene, cfg.world, workers=workers)
    eval_bank = make_bank(EVAL_SEED, cfg.eval_scenes, 1, cfg.world, workers=workers)
    log(f"scenes: {len(bank)} train ({len(bank.q_scene)} questions), {len(eval_bank)} held-out (seed {EVAL_SEED})")

    if cfg.clip_from is None:
        train_clip(clip, tower, bank, eval_bank, cfg, log)
        clip.save_pretrained(checkpoint_dir / "clip-stage")
    else:
        clip = CLIPModel.from_pretrained(cfg.clip_from).eval().requires_grad_(False)
        tower = TransformersTextTower(clip, clip_tokenizer)
        log(f"stages 1-2 skipped: CLIP loaded from {cfg.clip_from}")
    tie_vision_towers(clip, llava)
    features = encode_bank(clip.vision_model, bank)
    eval_features = encode_bank(clip.vision_model, eval_bank)
    log("encoded the scene banks")
    if cfg.clip_from is None:
        train_text(clip, tower, bank, features, eval_bank, eval_features, cfg, log)
        clip.save_pretrained(checkpoint_dir / "clip-text-stage")

    layout = PromptLayout(processor.tokenizer)
    if cfg.llava_from is None:
        align_projector(llava, processor.tokenizer, bank, features["features"], cfg, log)
    else:
        llava = LlavaForConditionalGeneration.from_pretrained(cfg.llava_from)
        log(f"stage 3a skipped: LLaVA loaded from {cfg.llava_from}")
    left = cfg.total_minutes - cfg.measure_minutes - (time.time() - started) / 60
    log(f"llava: {left:.1f} minutes left for VQA training")
    best = train_llava(llava, layout, bank, features["features"], eval_bank, eval_features["features"], cfg, log,
                       checkpoint_dir, max(left, 0.1))
    assert all(torch.equal(a, b) for a, b in zip(clip.vision_model.state_dict().values(),
                                                 llava.model.vision_tower.state_dict().values())), \
        "the LLaVA vision tower drifted from the CLIP one; keep it frozen in stage 3"
    save_models(clip, clip_tokenizer, llava, processor, out_dir)
    train_minutes = (time.time() - started) / 60
    log(f"trained in {train_minutes:.1f} min (best held-out first-token accuracy {best}); measuring")

    metrics = measure(out_dir, n=40 if quick else 500)
    metrics["train_minutes"] = round(train_minutes, 1)
    metrics["config"] = asdict(cfg)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log(f"metrics {json.dumps({k: v for k, v in metrics.items() if k != 'config'})}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help=f"a new output folder (default {RUN_OUT}; a temp folder "
                        "with --quick)")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: a few steps of every stage")
    parser.add_argument("--total-minutes", type=float, default=None, help="wall-clock budget of the whole run")
    parser.add_argument("--clip-from", default=None, help="a saved CLIPModel folder (e.g. a run's checkpoints/"
                        "clip-text-stage): skip stages 1-2")
    parser.add_argument("--train-scenes", type=int, default=None, help="precomputed training scenes")
    parser.add_argument("--llava-from", default=None, help="a saved LLaVA folder (e.g. a run's checkpoints/llava-best): "
                        "continue stage 3b from it; needs --clip-from")
    parser.add_argument("--seed", type=int, default=None, help="world stream of the training scenes and torch seed "
                        "(default 0)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    cfg = TrainConfig()
    if args.total_minutes is not None:
        cfg = replace(cfg, total_minutes=args.total_minutes)
    if args.clip_from is not None:
        cfg = replace(cfg, clip_from=args.clip_from)
    if args.train_scenes is not None:
        cfg = replace(cfg, train_scenes=args.train_scenes)
    if args.llava_from is not None:
        if args.clip_from is None:
            parser.error("--llava-from needs --clip-from: the CLIP whose vision tower that LLaVA carries")
        cfg = replace(cfg, llava_from=args.llava_from)
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    out = args.out or (Path(tempfile.mkdtemp(prefix="shapes-quick-")) if args.quick else RUN_OUT)
    train(out, quick=args.quick, config=cfg)
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
