"""What each compression method is, in one place: its function, what it needs, what it decides, its paper, how the
figures draw it and how the explorer shows its options.

Validation (``rclib.compress``), the CLI help, the bench, the explorer's controls, the figures, the
README's method table and the notebooks all read :data:`rclib.methods.METHODS`, a name -> :class:`MethodSpec`
mapping whose entries live in ``rclib/methods/__init__.py``. Adding a method is one file with its function plus
one entry in :data:`~rclib.methods.METHODS`. A method that prunes inside the LLM is a :class:`PrunerSpec`: its
function returns a pruner for the LLM to apply, not a result.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Callable

from rclib.result import CompressionResult

if TYPE_CHECKING:
    from rclib.models.llm_pruning import Pruner

LAYOUTS = ("any", "grid")  # the token layouts a method can read: any set of tokens, or one square patch grid
INPUTS = ("cls_attn", "text_sim", "keys", "target")  # what a method may need besides the tokens; target (the
# ground-truth mask of the asked-about objects, [B, N] bool) is passed as an option: only a benchmark has it
PLACEMENTS = ("before_llm", "inside_llm")  # where a method prunes
SCORE_SOURCES = ("shared", "feature_layer")  # the [CLS] scores a method reads by default: "shared", RC's (the
# last vision layer, all heads as one); "feature_layer", LLaVA's feature layer (the penultimate), per head, mean
SIGNATURE = ("tokens", "cls_attn", "text_sim", "keys", "budget")  # every method's first five parameters
CONTROL_KINDS = ("choice", "int", "float", "switch")  # a dropdown, an integer or float slider, a checkbox


@dataclass(frozen=True)
class PlotStyle:
    """How the curves draw a method: it stays recognisable where its line meets another."""

    colour: str
    marker: str  # a matplotlib marker ("" for none); "*" is taken: it marks the adaptive budgets
    line: str  # a matplotlib line style
    width: float = 1.3  # line width in points


@dataclass(frozen=True)
class Control:
    """How the explorer shows one option; methods that take an option of the same name share its control."""

    label: str  # the control's description
    kind: str  # one of CONTROL_KINDS
    choices: tuple = ()  # a "choice" control's values
    low: float = 0  # a slider's range and step
    high: float = 1
    step: float = 1
    when: tuple[str, object] | None = None  # (option, value): read only while the method's option has that value (a
    # method without that option always reads it)

    def __post_init__(self):
        assert self.kind in CONTROL_KINDS and (self.kind == "choice") == bool(self.choices), \
            f"{self.label}: kind {self.kind!r} with choices {self.choices}"


@dataclass(frozen=True)
class MethodSpec:
    """One compression method as the rest of rclib sees it: fn(tokens, cls_attn, text_sim, keys, budget,
    **options) -> CompressionResult."""

    name: str  # the word users type (``method="rc"``, ``--method rc``)
    fn: Callable[..., CompressionResult]
    summary: str  # one line: what it keeps and what it merges
    paper: str  # where it comes from ("" for simple baselines)
    style: PlotStyle = field(kw_only=True)  # its curves in the figures
    needs: tuple[str, ...] = ()  # inputs of INPUTS it reads; compress refuses to run without them
    adaptive: bool = False  # with budget=None it chooses K per sample itself (else a default budget applies)
    takes_budget: bool = True  # False: K is fixed by the method (all tokens)
    config: type | None = None  # a dataclass whose fields are options too (RC's RCConfig), beside keyword-only args
    scores: str = "shared"  # one of SCORE_SOURCES: the cls_attn / keys its authors read (CompressedModel passes them;
    # the run option scores="shared" gives it RC's instead, for ablations)
    kept_by: str = ""  # what picks the tokens it keeps unchanged (Fate.KEPT, counted as n_visual), as printed beside
    # their count: "visual" for the [CLS]-attention score; "" for a selection that is no one score (printed "kept")
    controls: dict[str, Control] = field(default_factory=dict)  # option -> its explorer control; none: not shown
    featured: bool = False  # one of the methods the summary figures and the ShapesWorld card compare
    layout: str = "any"  # one of LAYOUTS: "grid" reads each image as one square patch grid (a model family whose
    # images are tiles or rectangles refuses it by name)
    placement: str = field(default="before_llm", init=False)  # one of PLACEMENTS
    options: dict[str, object] = field(init=False)  # option name -> default, derived from fn or config

    def __post_init__(self):
        unknown = set(self.needs) - set(INPUTS)
        assert not unknown and self.placement in PLACEMENTS and self.scores in SCORE_SOURCES and self.layout in LAYOUTS, \
            f"{self.name}: needs {unknown or ''} placement {self.placement!r} scores {self.scores!r} layout {self.layout!r}"
        object.__setattr__(self, "options", option_defaults(self.fn, self.config))
        shown = set(self.controls) - set(self.options)
        assert not shown, f"{self.name}: controls for options it does not take: {shown}"

    @property
    def kept_label(self) -> str:
        """What its Fate.KEPT tokens are called beside their count: "kept (visual)", or "kept"."""
        return f"kept ({self.kept_by})" if self.kept_by else "kept"

    def check_options(self, options: dict) -> None:
        """Raise a ValueError naming the options ``self`` does not take, and the ones it does."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ", ".join(self.options) or "none"
            raise ValueError(f"method {self.name!r} takes no option {', '.join(map(repr, unknown))}; "
                             f"its options: {accepted}")


@dataclass(frozen=True)
class PrunerSpec(MethodSpec):
    """A method that prunes inside the LLM: the same call returns its pruner (see
    :class:`rclib.models.llm_pruning.Pruner`), which the LLM applies while it reads the prompt."""

    fn: Callable[..., Pruner]
    placement: str = field(default="inside_llm", init=False)


def option_defaults(fn: Callable, config: type | None) -> dict[str, object]:
    """Option name -> default: the parameters of ``fn`` after the five inputs (e.g. a preset), then the fields of
    ``config``."""
    extra = list(inspect.signature(fn).parameters.values())[len(SIGNATURE):]
    options = {p.name: p.default for p in extra if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if config is not None:
        assert is_dataclass(config), f"config must be a dataclass, got {config!r}"
        options.update({f.name: f.default for f in fields(config)})
    return options


def method_table(methods: dict[str, MethodSpec]) -> str:
    """A Markdown table of the methods: name, where it prunes, K, inputs, what it does, paper."""
    lines = ["| method | prunes | K | needs | what it does | paper |", "|---|---|---|---|---|---|"]
    for spec in methods.values():
        k = "all" if not spec.takes_budget else ("adaptive or budget" if spec.adaptive else "budget")
        where = spec.placement.replace("_", " ")
        lines.append(f"| `{spec.name}` | {where} | {k} | {', '.join(spec.needs) or '-'} | {spec.summary} | "
                     f"{spec.paper or '-'} |")
    return "\n".join(lines)
