# %% [markdown]
# # 03 · How Recoverable Compression works
#
# One section per stage, each with its numbers and its picture, then three experiments you can
# rerun: what is lost without the text stage, what breaks when the kept tokens are shuffled, and
# where the dynamic filter puts its threshold. The code is in `rclib/methods/rc.py`, which reads
# like this notebook.

# %% tags=["parameters"]
import os

# The embedded ShapesWorld model by default; MODEL = "llava-1.5-7b" needs llava-hf/llava-1.5-7b-hf and
# openai/clip-vit-large-patch14-336 in the Hugging Face cache (`hf download <id>`).
MODEL = os.environ.get("RCLIB_MODEL", "shapes")
TEXT_ENCODER = os.environ.get("RCLIB_TEXT_ENCODER") or None
EXAMPLE = 0  # index into examples_for_model(MODEL)
N_EXPERIMENT = 24  # ShapesWorld questions per experiment (more = slower, steadier)

# %%
import pandas as pd

import rclib
from rclib import experiments, gallery, viz
from rclib.bench import Cell
from rclib.examples import examples_for_model
from rclib.models import load
from rclib.result import Fate

model = load(MODEL, TEXT_ENCODER)
example = examples_for_model(MODEL)[EXAMPLE]
encoded = model.encode(example.image, example.question)
image, grid = model.display_images(encoded)[0], encoded.grid
result = model.compress(encoded, "rc")
print(f"Q: {example.question}   ({encoded.n_tokens} visual tokens on a {grid[0]} x {grid[1]} grid)")
result.counts(0)

# %% [markdown]
# ## Stage 0 · Two scores per patch
#
# - **visual score** `a`: the attention of the [CLS] token over the patches in the last vision layer
#   (all heads as one). It says what the vision tower found salient, whatever the question.
# - **text score** `s`: the cosine between the question's CLIP text embedding and each patch token
#   projected into CLIP's joint space. It says which patches the question is about.

# %%
viz.score_maps(image, grid, encoded.cls_attn[0], encoded.text_sim[0])

# %% [markdown]
# ## Stage 1 · Visual filter
#
# The dynamic scale filter counts the outliers among the scores (LOF with 20 neighbours, as the
# released code) and keeps that many of the highest. No budget is given: a peaked attention map keeps
# few tokens, a flat one more.

# %%
viz.score_heatmap(image, encoded.cls_attn[0], grid, f"kept by the visual filter: {int(result.n_visual[0])}",
                  cmap="viridis", highlight=result.fate[0] == Fate.KEPT)

# %% [markdown]
# ## Stage 2 · Text information recovery
#
# Small objects the question asks about rarely draw the [CLS] token's attention. Among the tokens
# the visual filter left, the same filter on the text scores decides how many to recover.

# %%
viz.score_heatmap(image, encoded.text_sim[0], grid, f"recovered by the text stage: {int(result.n_text[0])}",
                  highlight=result.fate[0] == Fate.RECOVERED, highlight_colour=viz.FATE_COLOURS[Fate.RECOVERED])

# %% [markdown]
# ## Stage 3 · Secondary recovery: merging the rest
#
# Among the remaining tokens, the filter picks a few centres by visual score (stars); each absorbs its
# 32 nearest remaining tokens by key similarity plus the text score, weighted by their visual score.
# The remaining non-centre tokens are summed into one extra token. Each colour is one cluster.

# %%
viz.fate_map(image, result, grid, f"{int(result.n_merged[0])} merged tokens (centres + extra)")

# %% [markdown]
# ## Stage 4 · Token merger
#
# Kept and recovered tokens go first, in their original raster order, then the merged centres, then
# the extra token. The LLM reads this sequence in place of all patches.

# %%
viz.token_sequence(result)

# %% [markdown]
# ## Experiment 1 · What is lost without the text stage?
#
# RC with and without text recovery on held-out ShapesWorld questions, adaptive budget and at a fixed
# budget of 64 tokens. *Evidence recall* is the share of the asked-about object's patches that reach the LLM
# in any form; small objects are where the visual filter misses them.

# %%
cells = [Cell("rc", "rc"), Cell("rc, no text stage", "rc", options={"text_stage": False}),
         Cell("rc @ 64", "rc", "64"), Cell("rc @ 64, no text stage", "rc", "64", {"text_stage": False})]
rows = experiments.run_experiment(model, cells, N_EXPERIMENT)
pd.DataFrame(rows).rename(columns={"method": "variant"}).round(3)

# %% [markdown]
# ## Experiment 2 · What breaks when the kept tokens are shuffled?
#
# RC keeps the selected tokens in their original order ("keep the original order of tokens when
# merging them from Steps 1 and 2"). Here the kept and recovered tokens reach the LLM in a random
# order instead; the token set is the same, only the positions change.

# %%
rows = experiments.run_experiment(model, [Cell("rc", "rc"), experiments.shuffled("rc, kept tokens shuffled")],
                                  N_EXPERIMENT)
pd.DataFrame(rows).round(3)

# %% [markdown]
# ## Experiment 3 · Where does the dynamic filter put its threshold?
#
# The filter never sees a threshold: it counts outliers and keeps that many of the top scores. LOF
# counts outliers in both tails (ticks), so a few very low scores raise the count too; PruMerge's IQR
# rule counts only scores above Q3 + 1.5 IQR. The dashed line is the lowest score kept.

# %%
gallery.threshold_figure(model, example)

# %%
{rule: int(rclib.outlier_count(encoded.cls_attn[0], rule)) for rule in ("lof", "iqr")}
