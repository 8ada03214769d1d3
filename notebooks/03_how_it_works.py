# %% [markdown]
# # 03 · How Recoverable Compression works
#
# One section per stage, each with its numbers and its picture, then four experiments you can rerun:
# what the text stage adds, what breaks when the kept tokens are shuffled, where the dynamic filter
# puts its threshold, and what the released code's text source does. The code is in
# `rclib/methods/rc.py`, which reads like this notebook.

# %% tags=["parameters"]
import os

# The embedded ShapesWorld model by default; MODEL = "llava-1.5-7b" needs llava-hf/llava-1.5-7b-hf and
# openai/clip-vit-large-patch14-336 in the Hugging Face cache (`hf download <id>`).
MODEL = os.environ.get("RCLIB_MODEL", "shapes")
TEXT_ENCODER = os.environ.get("RCLIB_TEXT_ENCODER") or None
EXAMPLE = 0  # index into examples_for_model(MODEL)
N_EXPERIMENT = 40  # ShapesWorld questions per experiment (more = slower, steadier)
N_PER_FAMILY = 16  # questions per family in the text-source experiment
TIGHT_BUDGET = 64  # a fixed budget K in this model's visual tokens, where every kept token counts

# %%
import pandas as pd
from IPython.display import Markdown, display

import rclib
from rclib import experiments, gallery, viz
from rclib.bench import Cell
from rclib.examples import accuracy_caveat, examples_for_model, learned_families
from rclib.gallery import trend
from rclib.models import load
from rclib.result import Fate
from rclib.shapes.world import sample_vqa

viz.notebook_figures()  # figures drawn at the resolution they are shown
SEED = 1234  # the held-out scenes of every experiment (rclib.experiments.run_experiment's default)

model = load(MODEL, TEXT_ENCODER)
families = learned_families(model)  # the ShapesWorld families this model answers: the experiments ask those
example = examples_for_model(MODEL)[EXAMPLE]
encoded = model.encode(example.image, example.question)
image, grid = model.display_images(encoded)[0], encoded.grid
result = model.compress(encoded, "rc")
print(f"Q: {example.question}   ({encoded.n_tokens} visual tokens on a {grid[0]} x {grid[1]} grid)")
result.counts(0)

# %% [markdown]
# RC's counts on this image: of `n_input_tokens` patches, `n_visual` are kept by the visual filter,
# `n_text` recovered by the text stage, and `n_merged` merged tokens (centres plus the extra token)
# carry the rest; the LLM reads `n_output_tokens`, their sum.
#
# ## Stage 0 · Two scores per patch
#
# - **visual score** `a`: the attention of the [CLS] token over the patches in the last vision layer
#   (all heads as one). It says what the vision tower found salient, whatever the question.
# - **text score** `s`: the cosine between the question's CLIP text embedding and each patch token
#   projected into CLIP's joint space. It says which patches the question is about.

# %%
viz.score_maps(image, grid, encoded.cls_attn[0], encoded.text_sim[0])

# %% [markdown]
# Bright patches score high. The two maps rarely agree: the [CLS] token attends to what stands out in
# the image as a whole, the text score to what the question names.
#
# ## Stage 1 · Visual filter
#
# The dynamic scale filter counts the outliers among the scores (LOF with 20 neighbours, as the
# released code) and keeps that many of the highest. No budget is given: a peaked attention map keeps
# few tokens, a flat one more.

# %%
viz.score_heatmap(image, encoded.cls_attn[0], grid, f"kept by the visual filter: {int(result.n_visual[0])}",
                  cmap="viridis", highlight=result.fate[0] == Fate.KEPT)

# %% [markdown]
# The outlined patches are the top of the left map of Stage 0, as many as the filter counted
# outliers: the visual filter alone decides nothing about the question.
#
# ## Stage 2 · Text information recovery
#
# Small objects the question asks about rarely draw the [CLS] token's attention. Among the tokens
# the visual filter left, the same filter on the text scores decides how many to recover.

# %%
viz.score_heatmap(image, encoded.text_sim[0], grid, f"recovered by the text stage: {int(result.n_text[0])}",
                  highlight=result.fate[0] == Fate.RECOVERED, highlight_colour=viz.FATE_COLOURS[Fate.RECOVERED])

# %% [markdown]
# The orange outlines sit where the text score is high among the patches the visual filter left:
# this is the step that brings back what the question asks about when [CLS] attention missed it.
#
# ## Stage 3 · Secondary recovery: merging the rest
#
# Among the remaining tokens, the filter picks a few centres by visual score (stars); each absorbs its
# 32 nearest remaining tokens by key similarity plus the text score, weighted by their visual score.
# The remaining non-centre tokens are summed into one extra token. Each colour is one cluster.

# %%
viz.fate_map(image, result, grid, f"{int(result.n_merged[0])} merged tokens (centres + extra)")

# %% [markdown]
# Every patch that is neither kept nor recovered lands in a cluster or in the extra token: RC drops
# nothing (no dark grey patch), it blends.
#
# ## Stage 4 · Token merger
#
# Kept and recovered tokens go first, in their original raster order, then the merged centres, then
# the extra token. The LLM reads this sequence in place of all patches.

# %%
viz.token_sequence(result)

# %% [markdown]
# The sequence above is all the LLM sees of the image: `n_output_tokens` tokens in place of
# `n_input_tokens`.
#
# ## Experiment 1 · What does the text stage add?
#
# RC with and without text recovery on held-out ShapesWorld questions (of the families this model
# answers, `families`; see its card for the others), at its adaptive budget and at a
# tight fixed budget (`TIGHT_BUDGET` of this model's tokens). RC drops nothing: every patch reaches the
# LLM in some form, so *evidence recall* is 1.0 for every variant and tells nothing here. What the text
# stage changes is **evidence kept**: the share of the asked-about objects' patches that reach the LLM
# as themselves (kept, recovered, or a centre) rather than blended into a merge.

# %%
tight = min(TIGHT_BUDGET, encoded.n_tokens // 2)
cells = [Cell("rc", "rc"), Cell("rc, no text stage", "rc", options={"text_stage": False}),
         Cell(f"rc @ {tight}", "rc", tight), Cell(f"rc @ {tight}, no text stage", "rc", tight, {"text_stage": False})]
rows = experiments.run_experiment(model, cells, N_EXPERIMENT, SEED, families=families)
columns = ["budget", "mean_tokens", "accuracy", "evidence_recall", "evidence_kept",
           *(f"accuracy_{family}" for family in families)]
exp1 = pd.DataFrame(rows).set_index("method")
display(viz.table(exp1[columns]))
caveat = accuracy_caveat(model, [s.question for s in sample_vqa(SEED, N_EXPERIMENT, families=families)])
with_text, without, with_text_k, without_k = (exp1.loc[c.label] for c in cells)
note = f"**Note:** {caveat}\n\n" if caveat else ""  # first: it qualifies what follows
unhelped = [family for family in families if without_k[f"accuracy_{family}"] > with_text_k[f"accuracy_{family}"]]
Markdown(note + f"Without the text stage, evidence kept {trend(with_text.evidence_kept, without.evidence_kept)} at the "
         f"adaptive budget and {trend(with_text_k.evidence_kept, without_k.evidence_kept)} at K = {tight}; accuracy "
         f"{trend(with_text.accuracy, without.accuracy)} and {trend(with_text_k.accuracy, without_k.accuracy)}."
         + (f" At K = {tight} RC answers {', '.join(unhelped)} better without the text stage: at a fixed budget its "
            "recovered tokens take a quarter of the slots from the visual filter, so where the [CLS]-salient tokens "
            "already hold the answer, recovering by the question's words displaces evidence instead of adding it."
            if unhelped else ""))

# %% [markdown]
# ## Experiment 2 · What breaks when the kept tokens are shuffled?
#
# RC keeps the selected tokens in their original order ("keep the original order of tokens when
# merging them from Steps 1 and 2"). Here the kept and recovered tokens reach the LLM in a random
# order instead; the token set is the same, only the positions change. Questions about where objects
# are (the *position* family) are where order could matter, so they are measured on their own too
# when the model answers them.

# %%
cells = [Cell("rc", "rc"), experiments.shuffled("rc, kept tokens shuffled")]
groups = {", ".join(families): families} | ({"position only": ("position",)} if "position" in families else {})
rows = [{"questions": name, **row} for name, asked in groups.items()
        for row in experiments.run_experiment(model, cells, N_EXPERIMENT, SEED, families=asked)]
exp2 = pd.DataFrame(rows).set_index(["questions", "method"])
display(exp2[["mean_tokens", "accuracy", "evidence_kept"]].round(2))
in_order, shuffled = (exp2.xs(c.label, level="method").accuracy for c in cells)
in_order_ci, shuffled_ci = (exp2.xs(c.label, level="method").ci for c in cells)  # 95% intervals, per group
changes = "; ".join(f"{trend(in_order[name], shuffled[name])} on {name} questions" for name in groups)
Markdown(f"Shuffled, accuracy {changes}"
         + ("" if "position" in families else " (this model did not learn position questions, so they are not asked)")
         + ". Evidence kept cannot change: the same tokens reach the LLM, only in another order. "
         + ("So this LLM reads the order too: a shuffled sequence tells it less about where things are."
            if any(shuffled_ci[name]["accuracy"][1] < in_order_ci[name]["accuracy"][0] for name in groups) else
            f"The 95% intervals ({N_EXPERIMENT} questions) overlap, so any change may be chance: no sign that this "
            "LLM reads the order rather than what the tokens hold (each patch's vision features carry its place, "
            "through CLIP's position embeddings)."))

# %% [markdown]
# ## Experiment 3 · Where does the dynamic filter put its threshold?
#
# The filter never sees a threshold: it counts outliers and keeps that many of the top scores. LOF
# counts outliers in both tails (ticks), so a few very low scores raise the count too; PruMerge's IQR
# rule counts only scores above Q3 + 1.5 IQR. The dashed line is the lowest score kept.

# %%
gallery.threshold_figure(model, example)

# %%
counts = {rule: int(rclib.outlier_count(encoded.cls_attn[0], rule)) for rule in ("lof", "iqr")}
Markdown(f"On this image LOF counts {counts['lof']} outliers and IQR {counts['iqr']}, so RC's visual filter keeps "
         f"{counts['lof']} tokens under LOF and would keep {counts['iqr']} under IQR (`rule=\"iqr\"`).")

# %% [markdown]
# ## Experiment 4 · The released code's text source
#
# The authors' released code does not embed the question: it embeds the first line of the LLM prompt
# (see docs/released.md), which is the same for every question. With this model's chat template that
# line is printed below. Three variants per question family (those this model answers): the paper's text score (the question),
# the released text score with the paper's RC (`model.encode(..., preset="released")` only), and the
# released code as a whole (`preset="released"` for the text and for RC's switches).

# %%
released = {"preset": "released"}
print("released text:", repr(model.encode(example.image, example.question, preset="released").text_inputs[0]))
cells = [Cell("question text (paper)", "rc"), Cell("released text", "rc", encode_options=released),
         Cell("released text + released rc", "rc", options=released, encode_options=released)]
rows = [{"family": family, **row} for family in families
        for row in experiments.run_experiment(model, cells, N_PER_FAMILY, SEED, families=(family,))]
by_family = pd.DataFrame(rows).pivot_table(index="method", columns="family", values=["accuracy", "evidence_kept"],
                                           sort=False)
display(viz.table(by_family))
kept = by_family["evidence_kept"].mean(axis=1)  # over the families
accuracy = by_family["accuracy"].mean(axis=1)
paper, released_text, released_all = (c.label for c in cells)
Markdown(f"Averaged over the families, with the released text evidence kept {trend(kept[paper], kept[released_text])} "
         f"and accuracy {trend(accuracy[paper], accuracy[released_text])}; with the released code as a whole, "
         f"evidence kept {trend(kept[paper], kept[released_all])} and accuracy "
         f"{trend(accuracy[paper], accuracy[released_all])}. "
         "The released text is one constant line, so its text score cannot point at the object a question names: "
         "the text stage recovers the same patches of an image whatever is asked about it.")
