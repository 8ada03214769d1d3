# %% [markdown]
# # 02 · Reproduce the paper
#
# *Recoverable Compression: A Multimodal Vision Token Recovery Mechanism Guided by Text Information*
# (arXiv 2409.01179, AAAI 2025). Four things on the model at hand: the overview figure (the four stages
# on one image), the cost of the LLM prefill, accuracy against retained tokens for RC and its peers on
# ShapesWorld, and the paper's benchmark table: the authors' numbers **as reported by them**, beside
# lmms-eval results of this model when you have run `rclib eval` (running LLaVA-1.5-7B on six
# benchmarks is out of reach of this notebook).

# %% tags=["parameters"]
import os

# The embedded ShapesWorld model by default. MODEL = "llava-1.5-7b" reproduces the figures on the real
# checkpoint; it needs llava-hf/llava-1.5-7b-hf and openai/clip-vit-large-patch14-336 in the Hugging
# Face cache (`hf download <id>`); then use a bundled photograph (EXAMPLE below) for the overview.
MODEL = os.environ.get("RCLIB_MODEL", "shapes")
TEXT_ENCODER = os.environ.get("RCLIB_TEXT_ENCODER") or None
EXAMPLE = 0  # index into examples_for_model(MODEL): ShapesWorld scenes first for the embedded model
N_BENCH = 200  # ShapesWorld questions for the accuracy curve, 40 per family (rclib bench: 1,000)
BUDGETS = (64, 128, 192)  # fixed budgets K, in this model's visual tokens (those below its count are run)
PREFILL_REPEATS = 5  # timed prefill runs (median reported)
EVAL_RESULTS = os.environ.get("RCLIB_EVAL_RESULTS", "out/eval")  # `rclib eval --out` folder, from the repository root

# %%
import pandas as pd
from IPython.display import Markdown, display

from rclib import cost, gallery, viz
from rclib.bench import BenchConfig
from rclib.eval.table import table_rows
from rclib.examples import accuracy_caveat, examples_for_model, learned_families, shapes_examples
from rclib.methods.common import ADAPTIVE
from rclib.models import load
from rclib.models.registry import REPO_ROOT
from rclib.shapes.world import sample_vqa

viz.notebook_figures()  # figures drawn at the resolution they are shown
model = load(MODEL, TEXT_ENCODER)
example = examples_for_model(MODEL)[EXAMPLE]

# %% [markdown]
# ## The four stages (the paper's Figure 1)
#
# 1. **Visual filter**: the [CLS] token's attention in the last vision layer; a dynamic filter (LOF
#    outliers) decides how many of the top-scoring tokens to keep (outlined in blue).
# 2. **Text recovery**: the question's CLIP text embedding against every patch; among the tokens the
#    visual filter left, the filter picks how many to recover (outlined in orange).
# 3. **Secondary recovery**: among the rest, a few centres (stars) each merge their nearest tokens by
#    key similarity plus the text score; everything else left becomes one extra token.
# 4. **Token merger**: kept and recovered tokens in their original order, then the merged centres,
#    then the extra token: that short sequence is what the LLM reads.

# %%
gallery.overview_figure(model, example)

# %% [markdown]
# The titles count each stage on this image, and the bottom row is the whole visual input of the LLM:
# blue and orange squares are patches passed on as they are, each other colour one merged token.
#
# ## Cost of the prefill
#
# Computed from the architecture of LLaVA-1.5-7B's LLM (Vicuna-7B: 32 layers, width 4096, MLP 11008,
# vocabulary 32000) with 60 text tokens (system prompt, roles, question), 2 FLOPs per multiply-add, in
# float16; `rclib.cost` states what each term counts. Three settings: LLaVA-1.5's 576 image tokens,
# the paper's average for RC (about 10% of them, 58 tokens), and the share RC keeps on this model's
# ShapesWorld scenes applied to 576 tokens.

# %%
scenes = shapes_examples(8)
encoded = model.encode([e.image for e in scenes], [e.question for e in scenes])
full, rc = model.compress(encoded, "full"), model.compress(encoded, "rc")
rc_share = float(rc.n_output.float().mean()) / encoded.n_tokens
settings = {f"all {cost.LLAVA_IMAGE_TOKENS} tokens": cost.LLAVA_IMAGE_TOKENS, "RC, paper's average (~10%)": 58,
            f"RC, its share on this model ({rc_share:.0%})": round(cost.LLAVA_IMAGE_TOKENS * rc_share)}
costs = pd.DataFrame([{"setting": name, **cost.cost_row(k)} for name, k in settings.items()]).set_index("setting")
display(costs.round(2))
full_cost, paper_cost, own_cost = (costs.iloc[i] for i in range(3))
Markdown(f"At the paper's 58 tokens the prefill of LLaVA-1.5-7B needs "
         f"{full_cost['TFLOPs'] / paper_cost['TFLOPs']:.1f}x fewer FLOPs and "
         f"{full_cost['activations (GiB)'] / paper_cost['activations (GiB)']:.1f}x less activation "
         f"memory than at {cost.LLAVA_IMAGE_TOKENS}; at the share RC keeps on this model ({rc_share:.0%}) the FLOPs "
         f"fall {full_cost['TFLOPs'] / own_cost['TFLOPs']:.1f}x.")

# %% [markdown]
# The authors report, on an A100 in FP16: 8.5 → 1.5 TFLOPs, prefill 30.3 → 9.2 ms, total memory
# 22.2 → 14.4 GB, activations 4.1 → 0.49 GB. The FLOPs match the formula; their memory accounting is
# not stated, so compare ratios.
#
# **Measured here**: the prefill of the model at hand (its own LLM, on this machine), all tokens vs
# RC, on the same batch of ShapesWorld questions.

# %%
measured = {"all tokens": (full, cost.measure_prefill(model, encoded, full, PREFILL_REPEATS)),
            "rc": (rc, cost.measure_prefill(model, encoded, rc, PREFILL_REPEATS))}
display(pd.DataFrame([{"setting": name, "mean visual tokens": float(res.n_output.float().mean()),
                       f"prefill of {len(scenes)} questions (ms)": seconds * 1000}
                      for name, (res, seconds) in measured.items()]).set_index("setting").round(1))
(_, t_full), (rc_result, t_rc) = measured.values()
speed = t_full / t_rc
Markdown(f"On this machine RC's {float(rc_result.n_output.float().mean()):.0f} tokens make this model's prefill "
         + (f"{speed:.1f}x faster than" if speed > 1.05 else f"{1 / speed:.1f}x slower than" if speed < 0.95
            else "about as fast as")
         + f" with all {encoded.n_tokens}. The FLOPs scale with the tokens; the time of a model this small also holds "
         "fixed costs per layer, so it falls less (and timings on a shared machine vary: rerun the cell).")

# %% [markdown]
# ## Accuracy against retained tokens (ShapesWorld)
#
# Held-out ShapesWorld questions of the families this model answers: `learned_families(model)` reads
# the all-token accuracy its training measured (`metrics.json` beside the checkpoint) and keeps the
# families at 90% or more (the shipped model answers all five; a model without that file is asked all
# five). Each method runs at fixed budgets K (the `BUDGETS` below this model's token count) and, for RC
# and PruMerge, at the count they choose themselves (stars); the dashed line is the model with all
# tokens. `N_BENCH` (200) keeps the notebook to a few minutes, with 95% intervals as bars; `rclib bench` runs the
# full benchmark.
#
# Besides accuracy: **evidence recall**, the share of the asked-about objects' patches that reach the
# LLM in any form (kept, recovered, a centre, or merged into a cluster or the extra token), and
# **evidence kept**, the share that reaches it as itself (kept, recovered or a centre).

# %%
budgets = (ADAPTIVE, *(k for k in BUDGETS if k < encoded.n_tokens))
families = learned_families(model)
rows = gallery.bench_rows(model, N_BENCH, budgets=budgets, families=families)
viz.accuracy_vs_tokens(rows, ("accuracy", "evidence_recall", "evidence_kept"),
                       title=f"ShapesWorld ({', '.join(families)}), {N_BENCH} questions, {encoded.n_tokens} visual tokens")

# %%
table = pd.DataFrame(rows)
display(table.pivot_table(index="method", columns="budget", values=["accuracy", "evidence_kept"], sort=False)
        .style.format("{:.2f}", na_rep=""))  # blank: a budget the method does not take
tight = budgets[1] if len(budgets) > 1 else ADAPTIVE
blending = [m for m, recall in table[table.method != "full"].groupby("method", sort=False).evidence_recall.min().items()
            if recall == 1.0]
caveat = accuracy_caveat(model, [s.question for s in sample_vqa(BenchConfig.seed, N_BENCH, families=families)])
full_accuracy = table.loc[table.method == "full", "accuracy"].iloc[0]
note = f"**Note:** {caveat}\n\n" if caveat else ""  # first: it qualifies what follows
Markdown(note + f"With all {encoded.n_tokens} tokens the model answers {full_accuracy:.0%} of these questions. At the "
         f"tightest budget, K = {tight}, accuracy: {gallery.ranking(rows, 'accuracy', tight)}; evidence kept: "
         f"{gallery.ranking(rows, 'evidence_kept', tight)}. Evidence recall is 1.0 at every budget for "
         f"{', '.join(blending) or 'no method'}: they drop nothing, they blend what they do not keep.")

# %% [markdown]
# ## The paper's benchmark table
#
# Rows labelled **reported** are the authors' numbers for LLaVA-1.5-7B, copied from their paper and
# README, **not measured by rclib**. Rows labelled **measured** come from lmms-eval runs of this model
# (`rclib eval --model ... --out out/eval`, see docs/eval.md) found under `EVAL_RESULTS`.

# %%
found = [folder for folder in [REPO_ROOT / EVAL_RESULTS] if folder.is_dir()]
paper_table = pd.DataFrame(table_rows(found, reported=True))
for_this_model = (paper_table["source"] != "measured") | (paper_table["model"] == MODEL)
shown = paper_table[for_this_model].dropna(axis=1, how="all")  # no column that no row fills
display(viz.table(shown.set_index(["source", "method"]), na_rep="not reported"))
n_measured = int((paper_table[for_this_model]["source"] == "measured").sum())
Markdown(f"{n_measured} measured row(s) of {MODEL} found under {EVAL_RESULTS}." if n_measured else
         f"No lmms-eval results of {MODEL} under {EVAL_RESULTS}: the table holds only the authors' reported numbers, "
         "in their units (`share_of_full` is each row's mean share of the full model's scores, in percent). "
         "`rclib eval` (docs/eval.md) adds measured rows.")
