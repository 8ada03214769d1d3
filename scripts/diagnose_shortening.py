"""Why does the ShapesWorld LM fail on short visual sequences? First-token accuracy of held-out questions
(seed 1, one per scene) when the LM reads:

- all:          every patch (576 tokens);
- subset:       64 uniformly random patches, original order (the sequence is 64 tokens long);
- subset+fill:  the same 64 patches in their slots, every other slot holding the mean of the left-out patches
                (576 tokens: same evidence as `subset`, the length and attention share of the full image);
- named:        the asked-about objects' patches first, then random ones, 64 in all (an oracle's evidence);
- named+fill:   the same with the other slots filled as above.

If `subset+fill` / `named+fill` recover what `subset` / `named` lose, the LM fails on the SHORTER sequence
(attention spread over fewer tokens, no background to rest on), not on missing evidence.

    python scripts/diagnose_shortening.py data/models/shapes-llava [--clip DIR] [--scenes 300]
"""
import argparse
from pathlib import Path

import torch

from rclib.models import load
from rclib.shapes.clip_stages import encode_bank
from rclib.shapes.data import PromptLayout, conversation_batch, make_bank
from rclib.shapes.evaluate import EVAL_SEED
from rclib.shapes.llava_losses import lm_forward
from rclib.shapes.world import FAMILIES, NUM_PATCHES


def weights_for(keep: torch.Tensor, fill: bool) -> torch.Tensor:
    """(B, K, P) mixing weights: keep (B, P) bool patches, 64 per row; fill: the others' mean in their slots."""
    B = len(keep)
    if not fill:
        index = torch.stack([torch.nonzero(k).flatten() for k in keep])  # (B, 64) ascending
        return torch.nn.functional.one_hot(index, NUM_PATCHES).float()
    rest = (~keep).float() / (~keep).float().sum(-1, keepdim=True)  # (B, P)
    eye = torch.eye(NUM_PATCHES).expand(B, -1, -1)
    return torch.where(keep[..., None], eye, rest[:, None, :])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("llava", help="a shapes-llava folder")
    parser.add_argument("--clip", default=None, help="its shapes-clip folder (default: beside the LLaVA folder)")
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--budget", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    clip = args.clip or str(Path(args.llava).parent / "shapes-clip")
    model = load(args.llava, text_encoder=clip, device="cpu")
    llava = model.model
    bank = make_bank(EVAL_SEED, args.scenes, 1, workers=1)
    features = encode_bank(llava.model.vision_tower, bank)["features"]
    layout = PromptLayout(model.processor.tokenizer)
    generator = torch.Generator().manual_seed(0)
    named = bank.q_named.any(1)  # (Q, P)
    order = torch.rand(len(named), NUM_PATCHES, generator=generator)
    random_keep = torch.zeros_like(named)
    random_keep.scatter_(1, order.topk(args.budget, -1).indices, True)
    named_keep = torch.zeros_like(named)
    named_keep.scatter_(1, (order + 2 * named.float()).topk(args.budget, -1).indices, True)  # named patches first
    settings = {"all": None, "subset": (random_keep, False), "subset+fill": (random_keep, True),
                "named": (named_keep, False), "named+fill": (named_keep, True)}
    print(f"{'reads':>12} " + " ".join(f"{f:>9}" for f in FAMILIES) + "      mean")
    with torch.no_grad():
        for name, setting in settings.items():
            correct = []
            for start in range(0, args.scenes, 25):
                rows = list(range(start, min(start + 25, args.scenes)))
                conv = conversation_batch(layout, bank, [[r] for r in rows])
                weights = None if setting is None else weights_for(setting[0][rows], setting[1])
                logits, _, conv = lm_forward(llava, conv, features[rows].float(), weights=weights)
                correct.append(logits[:, 0].argmax(-1) == conv.targets[:, 0])
            correct = torch.cat(correct).float()
            per_family = [correct[bank.q_family == i].mean().item() for i in range(len(FAMILIES))]
            print(f"{name:>12} " + " ".join(f"{v:9.2f}" for v in per_family) + f" {correct.mean().item():9.3f}")


if __name__ == "__main__":
    main()
