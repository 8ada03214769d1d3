"""The model families rclib runs, by config.json's ``model_type``: one module each, behind :class:`Family`.

Adding a family is one module with a :class:`Family` subclass and one entry in :data:`FAMILIES`.
"""
from __future__ import annotations

from rclib.models.families.base import NEWLINES, Family, VisualBatch
from rclib.models.families.llava import Llava
from rclib.models.families.llava_next import LlavaNext
from rclib.models.families.llava_onevision import LlavaOnevision
from rclib.models.families.qwen2_5_vl import Qwen2_5_VL

FAMILIES: dict[str, Family] = {family.model_type: family
                               for family in (Llava(), LlavaNext(), LlavaOnevision(), Qwen2_5_VL())}


def family_of(model_type: str | None) -> Family:
    """The family of a checkpoint whose config.json says ``model_type``; a ValueError names the ones rclib runs."""
    if model_type not in FAMILIES:
        known = ", ".join(f"{f.title} ({name!r})" for name, f in FAMILIES.items())
        raise ValueError(f"a {model_type!r} checkpoint (config.json's model_type) is not a model family rclib runs; "
                         f"it runs {known}")
    return FAMILIES[model_type]


__all__ = ["FAMILIES", "NEWLINES", "Family", "VisualBatch", "family_of"]
