# %% [markdown]
# # 04 · RC against its peers
#
# The same images through every method rclib implements, then a small ShapesWorld benchmark:
# accuracy against retained tokens, overall and by question family, with the oracle (the asked-about
# objects' own patches first): no selection of K tokens keeps more of the evidence.

# %% tags=["parameters"]
import os

# The embedded ShapesWorld model by default; MODEL = "llava-1.5-7b" needs llava-hf/llava-1.5-7b-hf and
# openai/clip-vit-large-patch14-336 in the Hugging Face cache (`hf download <id>`).
MODEL = os.environ.get("RCLIB_MODEL", "shapes")
TEXT_ENCODER = os.environ.get("RCLIB_TEXT_ENCODER") or None
N_IMAGES = 3  # rows of the token-map grid
N_BENCH = 200  # ShapesWorld questions, 40 per family: 95% intervals of about +-0.1 per family (rclib bench: 1,000)
BUDGETS = (64, 128, 192)  # fixed budgets K, in this model's visual tokens (those below its count are run)

# %%
import pandas as pd
from IPython.display import Markdown, display

from rclib import gallery, viz
from rclib.bench import BenchConfig
from rclib.examples import accuracy_caveat, examples_for_model, learned_families
from rclib.methods import METHODS, method_table
from rclib.methods.common import ADAPTIVE
from rclib.models import load
from rclib.shapes.world import FAMILIES, sample_vqa

viz.notebook_figures()  # figures drawn at the resolution they are shown
model = load(MODEL, TEXT_ENCODER)
examples = examples_for_model(MODEL, N_IMAGES)[:N_IMAGES]
Markdown(method_table(METHODS))

# %% [markdown]
# The table is rclib's method registry: where each method prunes (before the LLM, or inside it from
# its attention), whether it fixes K or chooses it, and what it reads besides the visual tokens.
#
# ## Token maps on the same images
#
# Every method that compresses before the LLM, at its own default: RC, PruMerge and PruMerge+ choose
# their count, the others keep their default share of the tokens (pooling: the nearest square).
# Blue: kept; orange: recovered by text; a colour per merged cluster (stars: centres); light green:
# the extra token; dark grey: dropped. Each title gives the tokens the LLM reads.

# %%
gallery.method_grid_figure(model, examples)

# %% [markdown]
# Read a row across: the same image and question (above the row), the image itself, then each method's
# choice. The methods that select by
# [CLS] attention (FasterVLM, VisionZip, PruMerge's centres) keep the same salient patches; DivPrune
# and random spread over the image; RC adds orange patches where the question points.
#
# ## ShapesWorld benchmark
#
# Every registered method at fixed budgets K (the `BUDGETS` below this model's token count) and, for
# the adaptive methods, at the count they choose (stars). `full` is the dashed line; `oracle` keeps the
# asked-about objects' patches first (no K-token selection keeps more evidence; whether it also answers
# best depends on how much context the LLM needs besides); `fastv` prunes inside the
# LLM, from layer K on (the paper's K = 2 of 32 decoder layers, at the same relative depth of this
# model's LLM). **Evidence kept**: the share of the asked-about objects' patches that reach
# the LLM as themselves (kept, recovered or a centre), not blended into a merge.

# %%
n_tokens = model.encode(examples[0].image, examples[0].question).n_tokens
budgets = (ADAPTIVE, *(k for k in BUDGETS if k < n_tokens))
families = learned_families(model)  # the families this model answers (all of them without a metrics.json)
rows = gallery.bench_rows(model, N_BENCH, tuple(METHODS), budgets, families=families)
viz.accuracy_vs_tokens(rows, ("accuracy", "evidence_kept"),
                       title=f"ShapesWorld ({', '.join(families)}), {N_BENCH} questions, {n_tokens} visual tokens")

# %%
table = pd.DataFrame(rows)
display(table.pivot_table(index="method", columns="budget", values=["accuracy", "evidence_kept"], sort=False)
        .style.format("{:.2f}", na_rep=""))  # blank: a budget the method does not take
tight = budgets[1] if len(budgets) > 1 else ADAPTIVE
caveat = accuracy_caveat(model, [s.question for s in sample_vqa(BenchConfig.seed, N_BENCH, families=families)])
full_accuracy = table.loc[table.method == "full", "accuracy"].iloc[0]
oracle = next(r for r in rows if r["method"] == "oracle" and r["budget"] == tight)
note = f"**Note:** {caveat}\n\n" if caveat else ""  # first: it qualifies what follows
above = [r["method"] for r in rows if r["budget"] == tight and r["method"] != "oracle"
         and r["ci"]["accuracy"][0] > oracle["ci"]["accuracy"][1]]  # better beyond both 95% intervals
Markdown(note + f"With all {n_tokens} tokens the model answers {full_accuracy:.0%} ({N_BENCH} questions; bars and "
         f"brackets are 95% intervals). At K = {tight}, accuracy: {gallery.ranking(rows, 'accuracy', tight, top=5)} "
         f"('>' where the intervals separate, '~' where they do not); evidence kept: "
         f"{gallery.ranking(rows, 'evidence_kept', tight, top=5)}. The oracle keeps every asked-about patch first "
         f"(evidence kept {oracle['evidence_kept']:.2f}) and answers {oracle['accuracy']:.2f}, "
         f"{oracle['accuracy'] / full_accuracy:.0%} of all tokens: "
         + (f"{', '.join(above)} score{'s' if len(above) == 1 else ''} higher with less of the evidence, beyond the "
            "intervals, so this LLM also reads the context a selection keeps." if above else
            f"no method does better with {tight} tokens, so what separates the methods here is the evidence they keep."))

# %%
baseline = next(r for r in rows if r["method"] == "random" and r["budget"] == tight)
below = [r for r in rows if r["budget"] == tight and r["ci"]["accuracy"][1] < baseline["ci"]["accuracy"][0]]
level = [r["method"] for r in rows if r["budget"] == tight and r not in below and r["method"] != "random"
         and r["ci"]["accuracy"][0] <= baseline["ci"]["accuracy"][1] and r["accuracy"] <= baseline["accuracy"]]
Markdown(f"Random keeps {tight} patches drawn uniformly ({baseline['accuracy']:.2f}, evidence kept "
         f"{baseline['evidence_kept']:.2f}): it keeps little of the asked-about objects but some of everything. "
         + (f"Below it at K = {tight}, beyond the intervals: "
            + ", ".join(f"{r['method']} ({r['accuracy']:.2f}, evidence kept {r['evidence_kept']:.2f})" for r in below)
            + ". A method below random that keeps more of the evidence loses the context random's spread keeps; one "
              "that keeps less loses the evidence itself: its own score ranks other tokens first." if below else
            f"No method falls below it beyond the intervals at K = {tight}.")
         + (f" Level with it within the intervals: {', '.join(level)}." if level else ""))

# %% [markdown]
# ## By question family
#
# Attribute, existence, glyph (the digit on a large object), position and multiple choice: the
# families ask for different evidence, so a method that keeps the salient tokens can do well on one
# and badly on another. Shown: the families this model answers.

# %%
viz.accuracy_vs_tokens(rows, tuple(f"accuracy_{family}" for family in families))

# %%
display(viz.table(table.set_index(["method", "budget"])[["mean_tokens", *(f"accuracy_{family}" for family in families),
                                                          "evidence_kept", "seconds"]]))
note = f"**Note:** {caveat}\n\n" if caveat else ""  # first: it qualifies what follows
best = "; ".join(f"{family}: {gallery.ranking(rows, f'accuracy_{family}', tight, top=2)}" for family in families)
untrained = [family for family in FAMILIES if family not in families]
Markdown(note + f"At K = {tight}, the two best per family: {best}."
         + (f" Not shown: {', '.join(untrained)}, which this model did not learn." if untrained else ""))
