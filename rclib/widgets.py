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
from contextlib import contextmanager

import ipywidgets as widgets

from rclib import viz
from rclib.examples import EXAMPLE_METHODS
from rclib.filters import RULES
from rclib.methods import METHODS

FIRST_METHOD = "rc"  # the method selected when the explorer opens
OPTION_CONTROLS = ("rule", "n_neighbors", "iqr_factor", "text_stage", "knn_k")  # method options with a control
RULE_OPTIONS = {"n_neighbors": "lof", "iqr_factor": "iqr"}  # options read only under one filter rule
FIGURE_DPI = 72  # enough for a notebook, fast to render


def png_bytes(figure) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    viz.close(figure)
    return buffer.getvalue()


def make_controls(examples: list, n_tokens: int) -> dict[str, widgets.Widget]:
    """The explorer's controls, the first method's option defaults (``METHODS``) preselected; budget 0 lets
    the method choose (adaptive methods) or take its default budget."""
    defaults = METHODS[FIRST_METHOD].options
    style = {"description_width": "150px"}
    return {
        "example": widgets.Dropdown(options=[e.name for e in examples], description="image", style=style),
        "question": widgets.Text(value=examples[0].question, description="question", continuous_update=False,
                                 style=style, layout=widgets.Layout(width="600px")),
        "method": widgets.Dropdown(options=EXAMPLE_METHODS, value=FIRST_METHOD, description="method", style=style),
        "rule": widgets.ToggleButtons(options=list(RULES), value=defaults["rule"], description="filter rule",
                                      style=style),
        "n_neighbors": widgets.IntSlider(value=defaults["n_neighbors"], min=2, max=60, description="LOF neighbours",
                                         style=style),
        "iqr_factor": widgets.FloatSlider(value=defaults["iqr_factor"], min=0.0, max=4.0, step=0.25,
                                          description="IQR factor", style=style),
        "text_stage": widgets.Checkbox(value=defaults["text_stage"], description="text stage (recovery)",
                                       style=style),
        "knn_k": widgets.IntSlider(value=defaults["knn_k"], min=1, max=64, description="KNN k (merge)", style=style),
        "budget": widgets.IntSlider(value=0, min=0, max=n_tokens, description=budget_label(METHODS[FIRST_METHOD]),
                                    style=style),
    }


def budget_label(spec) -> str:
    """The budget slider's label for a method: what 0 means to it."""
    return "budget (0: adaptive)" if spec.adaptive else "budget (0: default)"


class Explorer:
    """Pick an image and question, move the controls, see scores, token fates, counts and answers.

    model: a :class:`~rclib.models.CompressedLlava`; examples: :class:`rclib.examples.Example` items.
    Which option controls and whether the budget apply to the selected method come from
    :data:`rclib.methods.METHODS`; selecting a method resets its option controls to its defaults.
    """

    def __init__(self, model, examples: list, max_new_tokens: int = 32):
        if not examples:
            raise ValueError("give the explorer at least one example (rclib.examples.examples_for_model())")
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
        self.holding = False  # True while several controls change at once: one refresh afterwards
        self.controls["example"].observe(self.on_example, names="value")
        self.controls["method"].observe(self.on_method, names="value")
        for name, control in self.controls.items():
            if name not in ("example", "method"):
                control.observe(self.refresh, names="value")
        self.refresh()

    @property
    def state(self) -> dict:
        """The controls' current values."""
        return {name: control.value for name, control in self.controls.items()}

    @property
    def spec(self):
        """The selected method's :class:`~rclib.methods.MethodSpec`."""
        return METHODS[self.controls["method"].value]

    @property
    def widget(self) -> widgets.Widget:
        c = self.controls
        method_box = widgets.VBox([c["method"], c["budget"], *(c[name] for name in OPTION_CONTROLS)])
        return widgets.VBox([c["example"], c["question"], widgets.HBox([method_box, self.answers_image]),
                             self.summary, self.figure, self.errors])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def encode(self, name: str, question: str):
        """The encoders' output for an example and question, computed once (with the all-tokens answer)."""
        key = (name, question)
        if key not in self.encoded:
            encoded = self.model.encode(self.examples[name].image, question)
            self.encoded[key] = encoded
            self.full_answers[key] = self.model.run(encoded, "full", max_new_tokens=self.max_new_tokens).texts[0]
        return self.encoded[key]

    def method_options(self) -> dict:
        """The selected method's options, read from the controls of the options it takes."""
        return {name: self.controls[name].value for name in OPTION_CONTROLS if name in self.spec.options}

    @contextmanager
    def hold(self):
        """Change several controls, then refresh once."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        self.refresh()

    def on_example(self, change) -> None:
        """A new example brings its own question."""
        with self.hold():
            self.controls["question"].value = self.examples[change["new"]].question

    def on_method(self, change) -> None:
        """A new method starts from its own option defaults."""
        with self.hold():
            for name in OPTION_CONTROLS:
                if name in self.spec.options:
                    self.controls[name].value = self.spec.options[name]

    def refresh(self, change=None) -> None:
        """Compress and answer with the current controls and redraw; errors go to the error area."""
        if self.holding:
            return
        self.errors.outputs = ()  # (clear_output needs a kernel; this works everywhere)
        self.error = None
        try:
            self.update()
        except Exception as error:  # shown, not swallowed: the callback's caller would hide it
            self.error = error
            self.errors.append_stderr("".join(traceback.format_exception(error)))

    def enable_controls(self) -> None:
        """Grey out what the selected method ignores: options it does not take, options of the filter rule it
        is not using, the budget when K is fixed by the method."""
        spec, rule = self.spec, self.controls["rule"].value
        for name in OPTION_CONTROLS:
            rule_applies = "rule" not in spec.options or RULE_OPTIONS.get(name, rule) == rule
            self.controls[name].disabled = name not in spec.options or not rule_applies
        self.controls["budget"].disabled = not spec.takes_budget
        self.controls["budget"].description = budget_label(spec)

    def update(self) -> None:
        """Enable the controls the method reads, compress, answer, and redraw counts and figures."""
        self.enable_controls()
        state = self.state
        example = self.examples[state["example"]]
        key = (example.name, state["question"])
        encoded = self.encode(*key)
        budget = (state["budget"] or None) if self.spec.takes_budget else None  # 0: the method's choice
        run = self.model.run(encoded, state["method"], budget, self.max_new_tokens, **self.method_options())
        self.result = run.result
        self.answers = {"all tokens": self.full_answers[key], state["method"]: run.texts[0]}
        counts = self.result.counts(0)
        self.summary.value = (f"<b>{state['method']}</b>: {counts['n_input_tokens']} tokens in &rarr; "
                              f"{counts['n_visual']} kept (visual) / {counts['n_text']} recovered (text) / "
                              f"{counts['n_merged']} merged &rarr; <b>{counts['n_output_tokens']} out</b>")
        n_out = {"all tokens": encoded.n_tokens, state["method"]: counts["n_output_tokens"]}
        truth = example.answer if state["question"] == example.question else None
        self.answers_image.value = png_bytes(viz.answers_panel(
            state["question"], {label: (text, n_out[label]) for label, text in self.answers.items()}, truth))
        image = self.model.display_images(encoded)[0]
        self.figure.value = png_bytes(viz.score_maps(image, encoded.grid, encoded.cls_attn[0], encoded.text_sim[0],
                                                     self.result))
