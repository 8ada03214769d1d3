"""What each compression method is, in one place: its function, what it needs, what it decides, its paper.

Validation (``rclib.compress``), the CLI help, the bench, the explorer's controls, the figures, the
README's method table and the notebooks all read :data:`rclib.methods.METHODS`, a name -> :class:`MethodSpec`
mapping. Adding a method is one file with its function plus one entry there.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Callable

from rclib.result import CompressionResult

INPUTS = ("cls_attn", "text_sim", "keys", "target")  # what a method may need besides the tokens; target (the
# ground-truth mask of the asked-about objects, [B, N] bool) is passed as an option: only a benchmark has it
STAGES = ("before_llm", "inside_llm")  # where a method prunes
SCORE_SOURCES = ("shared", "feature_layer")  # the [CLS] scores a method reads by default: "shared", RC's (the
# last vision layer, all heads as one); "feature_layer", LLaVA's feature layer (the penultimate), per head, mean
SIGNATURE = ("tokens", "cls_attn", "text_sim", "keys", "budget")  # every method's first five parameters


@dataclass(frozen=True)
class MethodSpec:
    """One compression method as the rest of rclib sees it."""

    name: str  # the word users type (``method="rc"``, ``--method rc``)
    fn: Callable[..., CompressionResult]  # fn(tokens, cls_attn, text_sim, keys, budget, **options); inside_llm:
    # the same call returns the method's pruner (see rclib.models.llm_pruning.Pruner), which the LLM applies
    summary: str  # one line: what it keeps and what it merges
    paper: str  # where it comes from ("" for simple baselines)
    needs: tuple[str, ...] = ()  # inputs of INPUTS it reads; compress refuses to run without them
    adaptive: bool = False  # with budget=None it chooses K per sample itself (else a default budget applies)
    takes_budget: bool = True  # False: K is fixed by the method (all tokens)
    stage: str = "before_llm"  # one of STAGES
    config: type | None = None  # a dataclass whose fields are options too (RC's RCConfig), beside keyword-only args
    scores: str = "shared"  # one of SCORE_SOURCES: the cls_attn / keys its authors read (CompressedLlava passes them;
    # the run option scores="shared" gives it RC's instead, for ablations)
    options: dict[str, object] = field(init=False)  # option name -> default, derived from fn or config

    def __post_init__(self):
        unknown = set(self.needs) - set(INPUTS)
        assert not unknown and self.stage in STAGES and self.scores in SCORE_SOURCES, \
            f"{self.name}: needs {unknown or ''} stage {self.stage!r} scores {self.scores!r}"
        object.__setattr__(self, "options", option_defaults(self.fn, self.config))

    def check_options(self, options: dict) -> None:
        """Raise a ValueError naming the options ``self`` does not take, and the ones it does."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ", ".join(self.options) or "none"
            raise ValueError(f"method {self.name!r} takes no option {', '.join(map(repr, unknown))}; "
                             f"its options: {accepted}")


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
        where = spec.stage.replace("_", " ")
        lines.append(f"| `{spec.name}` | {where} | {k} | {', '.join(spec.needs) or '-'} | {spec.summary} | "
                     f"{spec.paper or '-'} |")
    return "\n".join(lines)
