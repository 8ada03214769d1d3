# %% [markdown]
# # 01 · Explore one image
#
# Recoverable Compression (RC) shrinks the visual tokens LLaVA-1.5 reads: it keeps the tokens the
# vision tower's [CLS] token attends to (**visual filter**), recovers the tokens the question points
# at (**text recovery**), merges the rest into a few cluster tokens (**KNN merge**), and hands the LLM
# the short sequence (**token merger**). Here you pick an image and a question and watch each choice.
#
# The controls rerun only the compression and the answer; the vision and text encoders run once per
# image and question. Colours mean the same in every notebook:
# **blue** kept by the visual filter, **orange** recovered by the text stage, **a colour per cluster**
# for merged tokens (a star marks each merge centre), **light green** merged into the extra token,
# **dark grey** dropped.

# %% tags=["parameters"]
import os

# The embedded ShapesWorld model (data/models, runs on a laptop CPU). For the real LLaVA-1.5-7B, set
# MODEL = "llava-1.5-7b": it needs llava-hf/llava-1.5-7b-hf (~14 GB) and
# openai/clip-vit-large-patch14-336 in the Hugging Face cache (`hf download <id>` on a machine with
# network) and, on CPU, patience. Any llava-hf folder works too, with TEXT_ENCODER = its CLIP.
MODEL = os.environ.get("RCLIB_MODEL", "shapes")
TEXT_ENCODER = os.environ.get("RCLIB_TEXT_ENCODER") or None
N_SCENES = 5  # ShapesWorld scenes offered next to the bundled photographs (one per question family)

# %%
from rclib.examples import examples_for_model
from rclib.models import load
from rclib.widgets import Explorer

model = load(MODEL, TEXT_ENCODER)
examples = examples_for_model(MODEL, N_SCENES)

# %% [markdown]
# ## The explorer
#
# - **image / question**: a ShapesWorld scene (the embedded model was trained on that world, so its
#   answers mean something) or a bundled photograph (meaningful with a real checkpoint). Type your
#   own question and press Enter. Under the question box: the words the embedded model reads; a
#   question with other words, or a photograph, gets a warning box and its output is shown as
#   **not an answer** (the figures still show what each method keeps).
# - **method**: RC or one of its peers, with a line on what it keeps. **budget**: the number of visual
#   tokens the LLM may read, in this model's tokens (0 lets RC and PruMerge choose). Controls a method
#   does not read are greyed out.
# - **filter rule** (RC): LOF, the released code's dynamic filter, or PruMerge's IQR rule.
#   **LOF neighbours**: how local the outlier test is. **text stage**: RC with or without text
#   recovery. **KNN k**: how many tokens each merge centre absorbs.
#
# Right of the controls (above them in a narrow window): the answers with all tokens and compressed, each
# with the visual tokens it read, the counts, and any warning, in a box of fixed height (it scrolls; the
# figure below never moves). Below, from the left: the image itself, the visual score (kept tokens outlined
# in blue), the text score (recovered tokens outlined in orange), and the fate of every patch; a model with
# tiles (LLaVA-NeXT) gets a row per view, its base view above its tiles' picture. `make present` serves
# this explorer alone, as a web app without code, for a class.
#
# *If you see "Error displaying widget: model not found", the notebook was reopened without the
# kernel that made the explorer: run it again (Run › Run All Cells).*

# %%
explorer = Explorer(model, examples)
explorer

# %% [markdown]
# Moving any control redraws only what changes (the outlines, the fate map and the answers), so the
# figure follows a slider as you drag it.
#
# The explorer's state is plain Python, so a cell can read or drive it. Moving a control from code
# reruns the compression exactly as the slider does; here, RC with and without its text stage:

# %%
import pandas as pd
from IPython.display import Markdown, display

counts = {}
for text_stage in (True, False):
    explorer.controls["text_stage"].value = text_stage
    counts["on" if text_stage else "off"] = {**explorer.result.counts(0), "model output": explorer.answers["rc"]}
explorer.controls["text_stage"].value = True
display(pd.DataFrame(counts).T.rename_axis("text stage"))
on, off = counts.values()
Markdown(f"With the text stage off, no token is recovered ({on['n_text']} were with it) and the visual filter keeps "
         f"the same {off['n_visual']} tokens (it reads only the [CLS] attention). The patches the text stage had "
         "recovered go to the merge stage instead, into a cluster or the extra token, and the merge stage makes "
         f"{off['n_merged']} merged tokens ({on['n_merged']} with the text stage)"
         + ("" if off["n_merged"] >= on["n_merged"] else
            ": fewer, although it has more patches to merge, because its number of centres is the filter's count of "
            "outliers among the remaining patches, not their number")
         + f". So the LLM reads {off['n_output_tokens']} tokens instead of {on['n_output_tokens']}."
         + (" The model output is not an answer here: see the explorer's warning." if explorer.warnings else ""))

# %% [markdown]
# ## Your own image
#
# Add an example and pick it in the dropdown of a new explorer:
#
# ```python
# from rclib.examples import Example
# examples.append(Example("my photo", "path/to/photo.jpg", "What is on the table?"))
# Explorer(model, examples)
# ```
