"""An interactive explorer: controls bound to compress + generate, figures from ``rclib.viz``.

Moving a control reruns only the compression and the compressed answer; the encoders run once per
image and question (cached here), and so does the all-tokens answer. A callback that raises shows its
traceback in the explorer's error area instead of vanishing (ipywidgets swallows such errors).

Tests drive it without a browser: set ``explorer.controls[name].value`` and read ``explorer.state``,
``explorer.result``, ``explorer.answers``, ``explorer.figure.value`` (PNG bytes) and ``explorer.error``.
"""
from __future__ import annotations

import io
import traceback

import ipywidgets as widgets

from rclib import viz
from rclib.filters import RULES
from rclib.methods import METHODS
from rclib.methods.rc import RCConfig

# Which controls each method reads; the others are greyed out while it is selected.
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "rc": ("rule", "n_neighbors", "iqr_factor", "text_stage", "knn_k"),
    "prumerge": ("iqr_factor", "knn_k"),
    "prumerge+": ("iqr_factor", "knn_k"),
}
FIGURE_DPI = 72  # enough for a notebook, fast to render


def png_bytes(figure) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    viz.close(figure)
    return buffer.getvalue()


def make_controls(examples: list, n_tokens: int) -> dict[str, widgets.Widget]:
    """The explorer's controls, RC's defaults preselected; budget 0 lets the method choose (adaptive)."""
    rc = RCConfig()
    style = {"description_width": "150px"}
    return {
        "example": widgets.Dropdown(options=[e.name for e in examples], description="image", style=style),
        "question": widgets.Text(value=examples[0].question, description="question", continuous_update=False,
                                 style=style, layout=widgets.Layout(width="600px")),
        "method": widgets.Dropdown(options=list(METHODS), value="rc", description="method", style=style),
        "rule": widgets.ToggleButtons(options=list(RULES), value=rc.rule, description="filter rule", style=style),
        "n_neighbors": widgets.IntSlider(value=rc.n_neighbors, min=2, max=60, description="LOF neighbours",
                                         style=style),
        "iqr_factor": widgets.FloatSlider(value=rc.iqr_factor, min=0.0, max=4.0, step=0.25,
                                          description="IQR factor", style=style),
        "text_stage": widgets.Checkbox(value=rc.text_stage, description="text stage (recovery)", style=style),
        "knn_k": widgets.IntSlider(value=rc.knn_k, min=1, max=64, description="KNN k (merge)", style=style),
        "budget": widgets.IntSlider(value=0, min=0, max=n_tokens, description="budget (0: adaptive)", style=style),
    }


class Explorer:
    """Pick an image and question, move the controls, see scores, token fates, counts and answers.

    model: a :class:`~rclib.models.CompressedLlava`; examples: ``rclib.figures.Example`` items.
    """

    def __init__(self, model, examples: list, max_new_tokens: int = 32):
        assert examples, "give the explorer at least one example (rclib.figures.examples())"
        self.model = model
        self.max_new_tokens = max_new_tokens  # answer length cap (ShapesWorld answers are one word)
        self.examples = {e.name: e for e in examples}
        self.encoded = {}  # (example name, question) -> Encoded, the encoders' output
        self.full_answers = {}  # (example name, question) -> answer with all tokens
        first = self.encode(examples[0].name, examples[0].question)
        self.controls = make_controls(examples, first.n_tokens)
        self.summary = widgets.HTML()
        self.figure = widgets.Image(format="png")
        self.answers_image = widgets.Image(format="png")
        self.errors = widgets.Output()
        self.result = None  # the last CompressionResult
        self.answers: dict[str, str] = {}  # "all tokens" / method -> answer
        self.error: BaseException | None = None  # the last exception a callback raised, else None
        self.controls["example"].observe(self.on_example, names="value")
        for name, control in self.controls.items():
            if name != "example":
                control.observe(self.refresh, names="value")
        self.refresh()

    @property
    def state(self) -> dict:
        """The controls' current values."""
        return {name: control.value for name, control in self.controls.items()}

    @property
    def widget(self) -> widgets.Widget:
        c = self.controls
        method_box = widgets.VBox([c["method"], c["budget"], c["rule"], c["n_neighbors"], c["iqr_factor"],
                                 c["text_stage"], c["knn_k"]])
        return widgets.VBox([c["example"], c["question"], widgets.HBox([method_box, self.answers_image]),
                             self.summary, self.figure, self.errors])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def encode(self, name: str, question: str):
        """The encoders' output for an example and question, computed once."""
        key = (name, question)
        if key not in self.encoded:
            encoded = self.model.encode(self.examples[name].image, question)
            self.encoded[key] = encoded
            full = self.model.compress(encoded, "full")
            self.full_answers[key] = self.model.generate(encoded, full, self.max_new_tokens)[0]
        return self.encoded[key]

    def method_options(self) -> dict:
        """Options of the selected method from the controls it reads."""
        state = self.state
        return {name: state[name] for name in METHOD_OPTIONS.get(state["method"], ())}

    def on_example(self, change) -> None:
        """A new example brings its own question (whose change refreshes), or refreshes at once."""
        question = self.examples[change["new"]].question
        if self.controls["question"].value != question:
            self.controls["question"].value = question
        else:
            self.refresh()

    def refresh(self, change=None) -> None:
        """Compress and answer with the current controls and redraw; errors go to the error area."""
        self.errors.outputs = ()  # (clear_output needs a kernel; this works everywhere)
        self.error = None
        try:
            self.update()
        except Exception as error:  # shown, not swallowed: the callback's caller would hide it
            self.error = error
            self.errors.append_stderr("".join(traceback.format_exception(error)))

    def update(self) -> None:
        """Grey out the controls the method ignores, compress, answer, and redraw counts and figures."""
        state = self.state
        used = METHOD_OPTIONS.get(state["method"], ())
        iqr_in_use = state["rule"] == "iqr" or state["method"] != "rc"  # PruMerge always filters by IQR
        for name in ("rule", "n_neighbors", "iqr_factor", "text_stage", "knn_k"):
            self.controls[name].disabled = (name not in used or (name == "n_neighbors" and state["rule"] != "lof")
                                            or (name == "iqr_factor" and not iqr_in_use))
        example = self.examples[state["example"]]
        key = (example.name, state["question"])
        encoded = self.encode(*key)
        self.result = self.model.compress(encoded, state["method"], state["budget"] or None, **self.method_options())
        answer = self.model.generate(encoded, self.result, self.max_new_tokens)[0]
        self.answers = {"all tokens": self.full_answers[key], state["method"]: answer}
        counts = self.result.counts(0)
        self.summary.value = (f"<b>{state['method']}</b>: {counts['n_input_tokens']} tokens in &rarr; "
                              f"{counts['n_visual']} kept (visual) / {counts['n_text']} recovered (text) / "
                              f"{counts['n_merged']} merged &rarr; <b>{counts['n_output_tokens']} out</b>")
        n_out = {"all tokens": encoded.n_tokens, state["method"]: counts["n_output_tokens"]}
        truth = example.answer if state["question"] == example.question else None
        self.answers_image.value = png_bytes(viz.answers_panel(
            state["question"], {label: (text, n_out[label]) for label, text in self.answers.items()}, truth))
        image = viz.image_from_pixels(encoded.pixel_values[0])
        self.figure.value = png_bytes(viz.scores_and_fates(image, self.result, encoded.grid, encoded.cls_attn[0],
                                                           encoded.text_sim[0]))
