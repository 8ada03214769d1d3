# %% [markdown]
# # 04 · RC against its peers
#
# The same images through every method rclib implements, then a small ShapesWorld benchmark:
# accuracy against retained tokens, overall and by the size of the object the question asks about.
#
# | method | what it keeps |
# |---|---|
# | `rc` | visual outliers + text-recovered tokens + KNN-merged clusters + 1 extra token (adaptive K) |
# | `prumerge` / `prumerge+` | IQR outliers of [CLS] attention, each merging its nearest tokens (+ uniform samples) |
# | `fastervlm` | the top K by [CLS] attention, nothing merged |
# | `visionzip` | dominant tokens by [CLS] attention + a few contextual merges |
# | `divprune` | the K most mutually diverse tokens |
# | `random`, `pool` | K random tokens; average pooling to K regions |

# %% tags=["parameters"]
import os

# The embedded ShapesWorld model by default; MODEL = "llava-1.5-7b" needs llava-hf/llava-1.5-7b-hf and
# openai/clip-vit-large-patch14-336 in the Hugging Face cache (`hf download <id>`).
MODEL = os.environ.get("RCLIB_MODEL", "shapes")
TEXT_ENCODER = os.environ.get("RCLIB_TEXT_ENCODER") or None
N_IMAGES = 3  # rows of the token-map grid
N_BENCH = 16  # ShapesWorld questions (rclib bench --n 500 for the README's numbers)
BUDGETS = ("adaptive", "64/576", "192/576")  # rclib.bench.DEFAULT_BUDGETS adds 128/576

# %%
import pandas as pd

from rclib import gallery, viz
from rclib.examples import examples_for_model
from rclib.models import load

model = load(MODEL, TEXT_ENCODER)
examples = examples_for_model(MODEL, N_IMAGES)[:N_IMAGES]

# %% [markdown]
# ## Token maps on the same images
#
# Every method at its own default: RC, PruMerge and PruMerge+ choose their count, the others keep
# about 64/576 of the tokens (pooling: the nearest square). Blue: kept; orange: recovered by text; a colour per merged cluster (stars: centres); light
# green: the extra token; dark grey: dropped. Each title gives the tokens the LLM reads.

# %%
gallery.method_grid_figure(model, examples)

# %% [markdown]
# ## ShapesWorld benchmark
#
# Each method at shares of tokens LLaVA-1.5 papers use (64 and 192 of 576) and, for the
# adaptive methods, at the count they choose (stars). The dashed line is the model with all tokens.
# **Evidence recall**: the share of the asked-about object's patches that reach the LLM in any form;
# **evidence kept**: the share that reaches it as itself (kept, recovered or a centre), not blended
# into a merge.

# %%
methods = ("full", "rc", "prumerge", "prumerge+", "fastervlm", "visionzip", "divprune", "random", "pool")
rows = gallery.bench_rows(model, N_BENCH, methods, BUDGETS)
viz.accuracy_vs_tokens(rows, ("accuracy", "evidence_recall", "evidence_kept"),
                       title=f"ShapesWorld, {N_BENCH} questions")

# %% [markdown]
# ## By object size
#
# Small objects (about one patch) are where a visual-only selection loses the evidence; the text
# stage is meant to bring it back.

# %%
viz.accuracy_vs_tokens(rows, ("accuracy_small", "accuracy_large"))

# %%
table = pd.DataFrame(rows)
table[["method", "budget", "mean_tokens", "n_small", "accuracy_small", "evidence_recall_small", "n_large",
       "accuracy_large", "evidence_recall_large", "seconds"]].round(3)
