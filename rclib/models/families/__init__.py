"""The model families rclib runs, by config.json's ``model_type``: one module each, behind :class:`Family`.

Adding a family is one module in this package with a :class:`Family` subclass that names its ``model_type``:
every module here is imported and each such class registered in :data:`FAMILIES`.
"""
from __future__ import annotations

import importlib
import pkgutil

from rclib.models.families.base import NEWLINES, Family, VisualBatch


def discovered() -> dict[str, Family]:
    """model_type -> family, for every Family subclass with a ``model_type`` in this package's modules."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    found, stack = {}, [Family]
    while stack:
        for cls in stack.pop().__subclasses__():
            stack.append(cls)
            if "model_type" in vars(cls):
                assert cls.model_type not in found, f"two families claim model_type {cls.model_type!r}"
                found[cls.model_type] = cls()
    return found


FAMILIES: dict[str, Family] = discovered()


def family_of(model_type: str | None) -> Family:
    """The family of a checkpoint whose config.json says ``model_type``; a ValueError names the ones rclib runs."""
    if model_type not in FAMILIES:
        known = ", ".join(f"{f.title} ({name!r})" for name, f in FAMILIES.items())
        raise ValueError(f"a {model_type!r} checkpoint (config.json's model_type) is not a model family rclib runs; "
                         f"it runs {known}")
    return FAMILIES[model_type]


__all__ = ["FAMILIES", "NEWLINES", "Family", "VisualBatch", "family_of"]
