"""Stages 1-2 of the recipe, the CLIP: contrastive pretraining with dense patch heads (`train_clip`), then the
text score against the locked vision tower (`train_text`, LiT), and the locked vision outputs of a scene bank
(`encode_bank`) the later stages read."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rclib.filters import outlier_count
from rclib.models.text import TransformersTextTower, text_similarity
from rclib.models.vision import encode_vision
from rclib.shapes.data import LABELS, SceneBank, pixel_values
from rclib.shapes.evaluate import cls_concentration
from rclib.shapes.recipe import TrainConfig
from rclib.shapes.stage import Logger, Stage
from rclib.shapes.world import GRID_SIZE, NUM_PATCHES


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
