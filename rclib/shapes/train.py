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
import json
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from transformers import CLIPModel, LlavaForConditionalGeneration

from rclib.models.text import TransformersTextTower
from rclib.shapes.build import build_all, image_processor, tie_vision_towers
from rclib.shapes.clip_stages import encode_bank, train_clip, train_text
from rclib.shapes.data import PromptLayout, make_bank
from rclib.shapes.evaluate import EVAL_SEED, measure
from rclib.shapes.llava_stages import align_projector, train_llava
from rclib.shapes.recipe import QUICK, TrainConfig
from rclib.shapes.stage import Logger

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "data" / "models"
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
    parser.add_argument("--llava-lr", type=float, default=None, help="peak learning rate of stage 3b (default "
                        f"{TrainConfig.llava_lr}; lower to fine-tune a saved LLaVA gently)")
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
    if args.llava_lr is not None:
        cfg = replace(cfg, llava_lr=args.llava_lr)
    out = args.out or (Path(tempfile.mkdtemp(prefix="shapes-quick-")) if args.quick else RUN_OUT)
    train(out, quick=args.quick, config=cfg)
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
