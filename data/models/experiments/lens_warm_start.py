"""Warm start from the recipe-hops checkpoint; adds a logit-lens loss: the hidden state at a name's last
word after the grounding layer, and at the answer position after the answer layer, must score the named
object's digit through lm_head. Does glyph then train?"""
import sys, time, torch, torch.nn.functional as F
from pathlib import Path
from transformers import CLIPModel, LlavaForConditionalGeneration, AutoProcessor
import rclib.shapes.train as T
from rclib.shapes.data import make_bank, conversation_batch, PromptLayout
from rclib.shapes.evaluate import EVAL_SEED
from rclib.shapes.world import DIGITS
torch.set_num_threads(2); torch.manual_seed(0)
minutes = float(sys.argv[1]); lens_weight = float(sys.argv[2])
clip = CLIPModel.from_pretrained("/work/main/data/models/shapes-clip").eval()
llava = LlavaForConditionalGeneration.from_pretrained("/work/run576/e/checkpoints/llava-best")
proc = AutoProcessor.from_pretrained("/work/main/data/models/shapes-llava")
bank = make_bank(7, 2000, 10, workers=2); eval_bank = make_bank(EVAL_SEED, 300, 1, workers=2)
feats = T.encode_bank(clip.vision_model, bank)["features"]; efeats = T.encode_bank(clip.vision_model, eval_bank)["features"]
layout = PromptLayout(proc.tokenizer); cfg = T.TrainConfig()
digit_ids = torch.tensor(proc.tokenizer.convert_tokens_to_ids(list(DIGITS)))
# digit label of each question's first named object (-1 none): from the digit patch labels under its glyph mask
def digit_of(rows):
    out = []
    for r in rows:
        g = bank.q_glyph[r, 0]
        lab = bank.patch_labels["digit"][bank.q_scene[r]][g]
        out.append(int(lab[0]) if len(lab) else -1)
    return out
llava.model.vision_tower.requires_grad_(False)
params = [p for p in llava.parameters() if p.requires_grad]
stage = T.Stage(torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01), minutes, 10**6, 0.05)
first_row = torch.searchsorted(bank.q_scene, torch.arange(len(bank) + 1))
gen = torch.Generator().manual_seed(5)
llava.eval(); print("start", T.first_token_accuracy(llava, layout, eval_bank, efeats), flush=True); llava.train()
while not stage.done:
    scenes = torch.randint(len(bank), (8,), generator=gen)
    picked = [(int(first_row[s]) + torch.randperm(int(first_row[s + 1] - first_row[s]), generator=gen)[:10]).tolist() for s in scenes.tolist()]
    conv = conversation_batch(layout, bank, picked)
    logits, reads = T.lm_forward(llava, conv, feats[scenes].float(), (0, 1, 2, 3))
    loss = F.cross_entropy(logits.flatten(0, 1), conv.targets.flatten(), ignore_index=-100) + T.grounding_losses(reads, conv, cfg)
    if lens_weight > 0:
        T_ = conv.name_pos.shape[1]
        d = torch.full((len(picked), T_), -1)
        for b, rows in enumerate(picked):
            d[b, : len(rows)] = torch.tensor(digit_of(rows))
        ok = d >= 0
        for layer, at in ((2, conv.name_pos[..., 0]), (3, conv.target_pos[:, 0::2])):
            h = reads[layer][1]
            hv = h.gather(1, at.clamp(min=0)[..., None].expand(-1, -1, h.shape[-1]))
            lg = llava.lm_head(hv)[..., digit_ids]  # (B, T, 10)
            loss = loss + lens_weight * F.cross_entropy(lg[ok], d[ok])
    stage.update(loss, params)
    if stage.step % 150 == 0 or stage.done:
        llava.eval(); print(stage.step, round(loss.item(), 3), T.first_token_accuracy(llava, layout, eval_bank, efeats), flush=True); llava.train()
