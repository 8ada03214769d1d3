"""Compression against vision time at Qwen2.5-VL's token count: an 896 x 896 image, 1,024 merged tokens.

Random weights at the real shapes of Qwen2.5-VL-3B's ViT (32 blocks of width 1,280, 16 heads, window
attention but in blocks 7/15/23/31, a 2 x 2 merger into the LLM's width of 2,048); the LLM is one layer
(neither timed part reads it). One thread, the CPU clock of this thread, one run: the vision step is
rclib's (the ViT forward, the received attention of its last full-attention block, the merge groups), the
compression step each method before the LLM on the encoded batch.

    python scripts/speed_qwen2_5_vl.py [--out benchmarks/results] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from rclib.methods import METHODS
from rclib.models import tiny
from rclib.models.compressed import CompressedModel
from rclib.models.prompts import build_prompt
from rclib.outputs import write_report
from rclib.speed.instrument import Stopwatch, peak_extra_bytes, round_robin, torch_threads
from rclib.speed.machine import machine_info, machine_name

SIDE = 896  # pixels: 64 x 64 patches of 14 px, 1,024 merged tokens
VIT_3B = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048, patch_size=14,
              spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31])
TARGET = 0.05  # the compression step's share of the vision step
QUESTION = "what colour is the bus in this picture ?"


def build() -> CompressedModel:
    """Qwen2.5-VL-3B's ViT with random weights, a one-layer LLM of its width, and a processor to 896 x 896."""
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    tokenizer = tiny.qwen_tokenizer(QUESTION.split())
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in tiny.QWEN_SPECIAL}
    text = dict(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=256, num_hidden_layers=1,
                num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=VIT_3B, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    options = dict(patch_size=14, merge_size=2, temporal_patch_size=2)
    images = Qwen2VLImageProcessor(min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE, **options)
    processor = Qwen2_5_VLProcessor(image_processor=images, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(**options),
                                    chat_template=tiny.QWEN_CHAT_TEMPLATE)
    return CompressedModel(model, processor, None, name="random Qwen2.5-VL-3B ViT", text_score="embedding")


def measure(repeats: int) -> dict:
    model = build()
    image = np.random.default_rng(0).integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8)
    watch = Stopwatch(torch.device("cpu"), time.thread_time)
    with torch_threads(1), torch.no_grad():
        prompt = build_prompt(model.processor, QUESTION, model.prompt_format)
        batch = model.processor(images=[image], text=[prompt], return_tensors="pt")
        vision = round_robin({"vision": lambda: model.family.visual_batch(model.model, batch)}, repeats, watch)
        encoded = model.encode(image, QUESTION)
        methods = [m for m, spec in METHODS.items() if spec.placement == "before_llm" and "target" not in spec.needs
                   and spec.layout == "any"]
        calls = {m: (lambda m=m: model.compress(encoded, m, None if METHODS[m].adaptive else 64)) for m in methods}
        seconds = round_robin(calls, repeats, watch)
        memory = {m: peak_extra_bytes(calls[m], torch.device("cpu")) for m in ("rc", "fastervlm")}
    vision_s = float(np.median(vision["vision"]))
    rows = [{"method": m, "seconds": float(np.median(s)), "share_of_vision": float(np.median(s)) / vision_s,
             "tokens": int(model.compress(encoded, m, None if METHODS[m].adaptive else 64).n_output[0])}
            for m, s in seconds.items()]
    return {"n_tokens": int(encoded.token_counts[0]), "width": int(encoded.features.shape[-1]), "vision_seconds": vision_s,
            "rows": rows, "peak_extra_mib": {m: b / 2**20 for m, b in memory.items()}, "target_share": TARGET,
            "rc_share": next(r["share_of_vision"] for r in rows if r["method"] == "rc"), "repeats": repeats,
            "machine": machine_info(torch.device("cpu")), "clock": "cpu (this thread), 1 thread"}


def markdown(results: dict) -> str:
    lines = [f"# Qwen2.5-VL: compression against vision, {results['n_tokens']:,} merged tokens (896 x 896)", "",
             f"Random weights at the shapes of Qwen2.5-VL-3B's ViT; {results['clock']}; median of "
             f"{results['repeats']} runs; {results['machine']['cpu']}, torch {results['machine']['torch']}.", "",
             f"Vision step (ViT + received attention + merge groups): {results['vision_seconds']:.2f} s. "
             f"RC's compression: {results['rc_share']:.2%} of it (target at most {results['target_share']:.0%}: "
             f"{'met' if results['rc_share'] <= results['target_share'] else 'not met'}).", "",
             "| method | tokens out | compression (ms) | share of vision |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['tokens']} | {1000 * r['seconds']:.1f} | {r['share_of_vision']:.2%} |"
              for r in results["rows"]]
    lines += ["", "Peak extra memory of compression (MiB): " + ", ".join(
        f"{m} {v:.1f}" for m, v in results["peak_extra_mib"].items()), "",
        "Reproduce: `python scripts/speed_qwen2_5_vl.py`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = measure(args.repeats)
    write_report(args.out / f"speed-qwen2.5-vl-{machine_name(results['machine'])}", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
