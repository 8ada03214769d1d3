"""The defaults of a pruner's optional hooks: every inside-LLM method's decision derives from :class:`PrunerBase`, so
that :func:`rclib.models.llm_pruning.generate_pruned` calls each hook of :class:`rclib.models.llm_pruning.Pruner`
on every pruner."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from rclib.models.llm_pruning import Sequence


class PrunerBase:
    """A pruner that reads the attention of the layer before, runs the same plan in an LLM of any depth and recycles
    nothing; a pruner overrides what it does otherwise."""

    source: str = "attention"  # one of rclib.models.llm_pruning.SOURCES

    def for_depth(self, n_layers: int) -> PrunerBase:
        """The plan for an LLM of ``n_layers`` decoder layers: this one."""
        return self

    def recycle(self, layer: int, attention, sequence: Sequence, keep: torch.Tensor) -> None:
        """No new places: nothing pruned is merged back."""
        return None
