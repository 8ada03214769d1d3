"""An interactive explorer: controls bound to compress + generate, figures from ``rclib.viz``.

Moving a control reruns only the compression and the compressed answer; the encoders run once per
image and question (cached here), and so does the all-tokens answer. The figure's panels
(:data:`rclib.viz.PANELS`) are drawn once per image and question (:class:`rclib.live.LiveFigure`); a
control redraws only what the result changes. The option controls are the ones the methods' specs
declare (``MethodSpec.controls`` in :data:`rclib.methods.METHODS`: label, widget kind, range, step), one
per option name; those the selected method does not read are greyed out. Next to the question: the words
the model reads (a closed-vocabulary model such as the embedded one) and, in a warning box, why its output
is not an answer when it is not (:func:`rclib.examples.caveats`, and a question without a word), with notes on
what the model does not see of the input (:func:`input_notes`: a centre-cropped image, a question past the text
tower's context), or that the question is empty (then nothing runs). A callback that raises shows its traceback in
the explorer's error area instead of vanishing (ipywidgets swallows such errors).

Layout: the controls on the left, the answers, counts and warnings in a box of fixed height on the right (it
scrolls when they are long; on a page too narrow for both, above the controls), the figure below both at its own
size in CSS pixels (drawn at twice that in device pixels): what a control changes never moves the figure, and the
budget slider is just above it. At 1,280 x 720 the controls and the figure fit one screen (``make present`` serves
the explorer alone); a tiled model's figure, a row per view, fits one screen by itself. The budget slider's range
is the shown image's tokens (a tiled model's vary with the image's tile layout).

Tests drive it without a browser: set ``explorer.controls[name].value`` and read ``explorer.state``,
``explorer.result``, ``explorer.answers``, ``explorer.answers_table.value`` (HTML), ``explorer.warnings``,
``explorer.figure.value`` (JPEG bytes, :meth:`rclib.live.LiveFigure.jpeg`) and ``explorer.error``.
"""
from __future__ import annotations

import html
import re
import traceback
from contextlib import contextmanager

import ipywidgets as widgets
from matplotlib.colors import to_hex

from rclib import viz
from rclib.examples import EXAMPLE_METHODS, REAL_CHECKPOINT, caveats, english_list, known_words, learned_families
from rclib.images import read_image
from rclib.live import LiveFigure
from rclib.methods import METHODS, MethodSpec
from rclib.methods.registry import Control
from rclib.result import Fate
from rclib.shapes.world import FAMILIES, normalize_answer
from rclib.views import image_views

FIRST_METHOD = "rc"  # the method selected when the explorer opens
LABEL_WIDTH = 150  # px of a control's description
READOUT_WIDTH = 110  # px of a slider's value and the margins around its track
MIN_TRACK = 300  # px of a slider's track at least; the budget's is one px per token or more up to MAX_TRACK
MAX_TRACK = 600  # px of a slider's track at most: the controls and the answers box share a 1,280 px slide's row
EXAMPLE_WIDTH = "470px"  # the image list
TEXT_WIDTH = "660px"  # the question box, beside the image list: long photo questions stay readable
STATUS_WIDTH = 320  # px of the answers box at least (it shares the controls' row, or wraps above them)
STATUS_HEIGHT = "276px"  # the answers box's fixed height, about the controls' column: it scrolls, nothing moves
NOTE_HEIGHT = "4em"  # the method's note, two lines: a longer one scrolls
SWITCH_WIDTH = 220  # px of a checkbox's box and label, beside the description column


def option_controls(specs) -> dict[str, tuple[Control, object]]:
    """Option name -> (its control, its default in the first of ``specs`` that declares it), in the order the specs
    declare them; methods that take an option of the same name share its control, so they must declare one alike."""
    found = {}
    for spec in specs:
        for name, control in spec.controls.items():
            if found.setdefault(name, (control, spec.options[name]))[0] != control:
                raise ValueError(f"{spec.name} declares option {name!r} another control than an earlier method")
    return found


OPTION_CONTROLS = option_controls(METHODS[name] for name in (FIRST_METHOD, *EXAMPLE_METHODS))


def slider_layout(steps: int) -> widgets.Layout:
    """A slider as wide as its steps in pixels (one token per pixel for the budget), from MIN_TRACK to MAX_TRACK (a
    tiled model's thousands of tokens share it; an arrow key still moves one step)."""
    return widgets.Layout(width=f"{LABEL_WIDTH + min(max(MIN_TRACK, steps), MAX_TRACK) + READOUT_WIDTH}px")


def option_widget(control: Control, value, style: dict) -> widgets.Widget:
    """The widget of one option :class:`~rclib.methods.registry.Control`, set to ``value``: a dropdown, a slider as
    wide as its steps, a checkbox."""
    if control.kind == "choice":
        return widgets.Dropdown(options=list(control.choices), value=value, description=control.label, style=style)
    if control.kind == "switch":
        return widgets.Checkbox(value=value, description=control.label, indent=True, style=style,
                                layout=widgets.Layout(width=f"{LABEL_WIDTH + SWITCH_WIDTH}px"))
    slider = widgets.IntSlider if control.kind == "int" else widgets.FloatSlider
    return slider(value=value, min=control.low, max=control.high, step=control.step, description=control.label,
                  style=style, layout=slider_layout(round((control.high - control.low) / control.step)))


def option_read(spec: MethodSpec, name: str, control: Control, values: dict) -> bool:
    """Whether ``spec``'s method reads option ``name`` at the controls' ``values``: it takes it, and the option its
    control depends on (``control.when``) has the value it needs or is not one of the method's."""
    if name not in spec.options:
        return False
    if control.when is None:
        return True
    option, needed = control.when
    return option not in spec.options or values[option] == needed


def make_controls(examples: list, n_tokens: int) -> dict[str, widgets.Widget]:
    """The explorer's controls, the options' defaults (:data:`OPTION_CONTROLS`) preselected; budget 0 lets
    the method choose (adaptive methods) or take its default budget; n_tokens: the first image's visual tokens."""
    style = {"description_width": f"{LABEL_WIDTH}px"}
    return {
        "example": widgets.Dropdown(options=[e.name for e in examples], description="image", style=style,
                                    layout=widgets.Layout(width=EXAMPLE_WIDTH)),
        "question": widgets.Text(value=examples[0].question, description="question (Enter to ask)",
                                 continuous_update=False, style=style, layout=widgets.Layout(width=TEXT_WIDTH)),
        "method": widgets.Dropdown(options=EXAMPLE_METHODS, value=FIRST_METHOD, description="method", style=style),
        "budget": widgets.IntSlider(value=0, min=0, max=n_tokens, description=budget_label(METHODS[FIRST_METHOD]),
                                    style=style, layout=slider_layout(n_tokens)),
        **{name: option_widget(control, value, style) for name, (control, value) in OPTION_CONTROLS.items()},
    }


def budget_label(spec) -> str:
    """The budget slider's label for a method: what 0 means to it."""
    if not spec.takes_budget:
        return "budget (not used)"
    return "budget (0: adaptive)" if spec.adaptive else "budget (0: default)"


def method_note(spec, n_tokens: int) -> str:
    """One line under the method: what it keeps and what the budget means to it, in the model's tokens."""
    if not spec.takes_budget:
        budget = f"it reads all {n_tokens} visual tokens, so the budget does not apply"
    elif spec.adaptive:
        budget = f"budget K: at most K of the {n_tokens} visual tokens; 0 lets it choose K per image"
    else:
        budget = f"budget K: K of the {n_tokens} visual tokens; 0 takes its default"
    where = " It prunes inside the LLM." if spec.placement == "inside_llm" else ""
    return f"<small><b>{spec.name}</b>: {html.escape(spec.summary)}.{where} {budget}.</small>"


def vocabulary_note(words: list[str] | None, learned: tuple[str, ...] = FAMILIES) -> str:
    """The words a closed-vocabulary model reads, for beside the question box ("" for an open vocabulary), and the
    ShapesWorld question families it answers when it did not learn them all."""
    if words is None:
        return ""
    listed = " ".join(html.escape(w) for w in words)
    families = "" if set(FAMILIES) <= set(learned) else (
        f" It answers {english_list(learned, 'none of the')} questions of its world "
        f"({', '.join(f for f in FAMILIES if f not in learned)}: not learned).")
    return (f"<small>This model reads only these {len(words)} words (any other word is unknown to it): "
            f"<code>{listed}</code>.{families}</small>")


EMPTY_QUESTION = ("The question is empty, and a model reads no empty question: type a question and press Enter. "
                  "The figure still shows the last question asked.")


def question_caveats(question: str) -> list[str]:
    """Why an output to ``question`` answers nothing whatever the model: a question without a word (an empty one is
    not asked at all: :data:`EMPTY_QUESTION`)."""
    if re.search(r"\w", question) or not question.strip():
        return []
    return [f"The question “{question.strip()}” has no word: the text score has nothing to point at (the text stage "
            "still recovers the patches its filter picks, by the prompt's own tokens) and the output answers no "
            "question. Type a question and press Enter."]


def input_notes(model, question: str, image, tiled: bool = False) -> list[str]:
    """What the model does not see of its input, one sentence each: the part of a non-square image the processor's
    centre crop cuts off (none for a tiled family, ``tiled``: its base view and tiles hold the whole image), the
    words past the text tower's context."""
    notes = []
    width, height = read_image(image).size  # a path, PIL image or array, read as the model reads it
    if getattr(model, "image_preprocess", "crop") == "crop" and width != height and not tiled:
        side = min(width, height)
        cut = "left and right" if width > height else "top and bottom"
        notes.append(f"This {width} x {height} image is not square: the processor keeps its centred {side} x {side} "
                     f"square, so the model and the figures see nothing of its {cut} "
                     f"({1 - side / max(width, height):.0%} of it).")
    tower = model.text_tower
    tokenizer = getattr(tower, "tokenizer", None)
    if callable(getattr(tokenizer, "encode", None)):  # a transformers tokenizer (open_clip's pads to its context)
        n_tokens = len(tokenizer.encode(question))
        if n_tokens > tower.context_length:
            notes.append(f"The question is {n_tokens} text tokens long and the text tower reads {tower.context_length}: "
                         "the text score ignores its end.")
    return notes


def warnings_box(found: list[str], notes: list[str] = ()) -> str:
    """The caveats as a visible warning box, then the notes on the input ("" when there is neither)."""
    boxes = []
    if found:
        items = "".join(f"<li>{html.escape(text)}</li>" for text in found)
        boxes.append('<div style="border-left: 4px solid #f08c00; background: #fff4e6; padding: 4px 10px; '
                     f"margin: 4px 0\"><b>Not an answer</b><ul style='margin: 2px 0'>{items}</ul>"
                     f"For real answers, use {html.escape(REAL_CHECKPOINT)}.</div>")
    if notes:
        items = "".join(f"<li>{html.escape(text)}</li>" for text in notes)
        boxes.append('<div style="border-left: 4px solid #1c7ed6; background: #e7f5ff; padding: 4px 10px; '
                     f"margin: 4px 0\"><b>Note</b><ul style='margin: 2px 0'>{items}</ul></div>")
    return "".join(boxes)


def layer_counts(run) -> str:
    """For a method inside the LLM, the visual tokens each decoder layer of sample 0 read (else nothing)."""
    if run.result.tokens_per_layer is None:
        return ""
    return f"; LLM layers read {', '.join(map(str, run.tokens_per_layer[0].tolist()))} visual tokens"


def answers_html(question: str, answers: dict[str, tuple[str, int]], n_tokens: int, truth: str | None,
                 meaningful: bool) -> str:
    """The answers as an HTML table: one row per setting (label -> (output, visual tokens it read)).

    truth: the true answer (a ShapesWorld scene) adds a "correct" column, judged as the bench scores
    (`normalize_answer`: the output's first word); meaningful=False (see
    :func:`rclib.examples.caveats`) labels the outputs as not answers.
    """
    head = ["setting", "visual tokens", "answer" if meaningful else "model output (not an answer)"]
    judged = truth is not None and meaningful
    rows = []
    for label, (text, n_read) in answers.items():
        shown = html.escape(text) if text else "<i>(empty: the model's first output was its end token)</i>"
        cells = [html.escape(label), f"{n_read} of {n_tokens}",
                 shown if meaningful else f'<span style="color: #868e96">{shown}</span>']
        if judged:
            cells.append("yes" if normalize_answer(text) == normalize_answer(truth) else "no")
        rows.append("".join(f"<td style='text-align: left; padding: 2px 10px'>{c}</td>" for c in cells))
    head += ["correct"] if judged else []
    header = "".join(f"<th style='text-align: left; padding: 2px 10px'>{h}</th>" for h in head)
    caption = f"Q: {html.escape(question)}" + (f" &nbsp; (true answer: {html.escape(truth)})" if truth else "")
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    return (f"<table style='border-collapse: collapse'><caption style='text-align: left; caption-side: top'>"
            f"{caption}</caption><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>")


def fate_legend_html(tiled: bool = False) -> str:
    """The fate colours of every figure, once, as a line of swatches, after what the panels show; tiled: the figure
    has a row per view (the base view, the tiles' picture)."""
    def swatch(colour: str, label: str) -> str:
        return (f"<span style='display: inline-block; width: 12px; height: 12px; background: {colour}; "
                f"margin: 0 4px 0 12px; vertical-align: middle'></span>{html.escape(label)}")

    items = [swatch(viz.FATE_COLOURS[fate], viz.FATE_LABELS[fate]) for fate in Fate if fate != Fate.CENTRE]
    items.append(swatch(to_hex(viz.CLUSTER_PALETTE[0]), "merged into a cluster (a colour each; a star marks "
                                                             "its centre)"))
    captions = "; ".join(panel.caption for panel in viz.PANELS.values())
    views = " The base view above, the tiles' picture below (dashed: the tiles' borders)." if tiled else ""
    return f"<small>From the left: {html.escape(captions)}.{views}<br>{''.join(items)}</small>"


class Explorer:
    """Pick an image and question, move the controls, see scores, token fates, counts and answers.

    model: a :class:`~rclib.models.CompressedModel`; examples: :class:`rclib.examples.Example` items.
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
        for name, control in self.controls.items():
            control.add_class(f"rclib-{name}")  # what the browser tests (tests/browser) find them by
        self.vocabulary = widgets.HTML(vocabulary_note(known_words(model), learned_families(model)))
        self.warning = widgets.HTML()
        self.method_note = widgets.HTML(layout=widgets.Layout(height=NOTE_HEIGHT, overflow="auto"))
        self.summary = widgets.HTML()
        self.answers_table = widgets.HTML()
        self.legend = widgets.HTML(fate_legend_html(tiled=len(first.views[0]) > 1))
        self.figure = widgets.Image(format="jpeg", layout=widgets.Layout(max_width="100%", height="auto"))
        self.errors = widgets.Output()
        for name in ("vocabulary", "warning", "method_note", "summary", "answers_table", "figure", "errors"):
            getattr(self, name).add_class(f"rclib-{name.replace('_', '-')}")
        self.maps = None  # the LiveFigure of the current image and question
        self.maps_key = None  # its (example name, question)
        self.result = None  # the last CompressionResult
        self.answers: dict[str, str] = {}  # "all tokens" / method -> answer
        self.warnings: list[str] = []  # why the current output is not an answer (caveats, question_caveats)
        self.notes: list[str] = []  # what the model does not see of the input (input_notes), or EMPTY_QUESTION
        self.error: BaseException | None = None  # the last exception a callback raised, else None
        self.holding = False  # True while controls change without a refresh each (quiet, hold)
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
    def n_tokens(self) -> int:
        """The shown image's visual tokens (all its views' for a tiled family): the budget slider's range."""
        return self.controls["budget"].max

    @property
    def spec(self):
        """The selected method's :class:`~rclib.methods.MethodSpec`."""
        return METHODS[self.controls["method"].value]

    @property
    def widget(self) -> widgets.Widget:
        c = self.controls
        inputs = widgets.HBox([c["example"], c["question"]], layout=widgets.Layout(flex_flow="row wrap"))
        controls = widgets.VBox([c["method"], self.method_note, *(c[name] for name in OPTION_CONTROLS), c["budget"]],
                                layout=widgets.Layout(width=c["budget"].layout.width, margin="0 12px 0 0"))
        status = widgets.VBox([self.answers_table, self.summary, self.warning],
                              layout=widgets.Layout(flex=f"1 1 {STATUS_WIDTH}px", min_width=f"{STATUS_WIDTH}px",
                                                    height=STATUS_HEIGHT, overflow="auto"))
        status.add_class("rclib-status")
        # A narrow page wraps the answers box above the controls: the budget slider stays just above the figure.
        row = widgets.HBox([controls, status], layout=widgets.Layout(flex_flow="row wrap-reverse"))
        return widgets.VBox([inputs, self.vocabulary, row, self.legend, self.figure, self.errors]
                            ).add_class("rclib-explorer")

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
    def quiet(self):
        """Change controls without a refresh for each."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False

    @contextmanager
    def hold(self):
        """Change several controls, then refresh once."""
        with self.quiet():
            yield
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
        """Grey out what the selected method ignores: options it does not take, options it does not read at the
        other controls' values (the IQR factor under the LOF rule), the budget when K is fixed by the method."""
        spec, values = self.spec, self.state
        for name, (control, _) in OPTION_CONTROLS.items():
            self.controls[name].disabled = not option_read(spec, name, control, values)
        self.controls["budget"].disabled = not spec.takes_budget
        self.controls["budget"].description = budget_label(spec)
        self.method_note.value = method_note(spec, self.n_tokens)

    def update(self) -> None:
        """Fit the budget's range to the image, enable the controls the method reads, compress, answer, and redraw
        counts, answers and figures."""
        example = self.examples[self.controls["example"].value]
        key = (example.name, self.controls["question"].value)
        if not key[1].strip():  # nothing to ask: say so, show no answer, keep the figure
            self.enable_controls()
            self.warnings, self.notes = [], [EMPTY_QUESTION]
            self.warning.value = warnings_box(self.warnings, self.notes)
            self.answers_table.value = self.summary.value = ""
            return
        encoded = self.encode(*key)
        with self.quiet():  # a budget over the image's tokens becomes all of them
            self.controls["budget"].max = encoded.n_tokens
        self.enable_controls()
        state = self.state
        budget = (state["budget"] or None) if self.spec.takes_budget else None  # 0: the method's choice
        run = self.model.run(encoded, state["method"], budget, self.max_new_tokens, **self.method_options())
        self.result = run.result
        self.answers = {"all tokens": self.full_answers[key], state["method"]: run.texts[0]}
        self.warnings = question_caveats(state["question"]) + caveats(self.model, state["question"], example.scene)
        self.notes = input_notes(self.model, state["question"], example.image, tiled=len(encoded.views[0]) > 1)
        self.warning.value = warnings_box(self.warnings, self.notes)
        counts = run.counts(0)  # in the model's units: row-end tokens included
        self.summary.value = (f"<small><b>{state['method']}</b>: {counts['n_input_tokens']} tokens in &rarr; "
                              f"{counts['n_visual']} {self.spec.kept_label} / {counts['n_text']} recovered (text) / "
                              f"{counts['n_merged']} merged &rarr; <b>{counts['n_output_tokens']} out</b>"
                              f"{layer_counts(run)}</small>")
        equivalent = float(run.equivalent_tokens[0])  # what each layer read, on average: the method's cost in tokens
        n_read = {"all tokens": encoded.n_tokens,
                  state["method"]: int(equivalent) if equivalent.is_integer() else round(equivalent, 1)}
        truth = example.answer if state["question"] == example.question else None
        self.answers_table.value = answers_html(
            state["question"], {label: (text, n_read[label]) for label, text in self.answers.items()},
            encoded.n_tokens, truth, meaningful=not self.warnings)
        if self.maps_key == key:
            self.maps.show(self.result, counts)
        else:  # another image or question: new scores on the same cells, or a new figure
            views = image_views(self.model, encoded)
            scores = {"visual": encoded.cls_attn[0], "text": encoded.text_sim[0]}
            if self.maps is not None and self.maps.fits(views):
                self.maps.show_scores(views, scores, self.result, counts)
            else:
                self.maps = LiveFigure(views, None, scores, self.result, counts=counts)
                self.figure.layout.width = f"{self.maps.css_size[0]}px"  # its own size: never stretched
            self.maps_key = key
        self.figure.value = self.maps.jpeg()
