"""``rclib eval``'s configuration checks: they read files only, and fail before lmms-eval starts, saying the fix.

The tasks exist (lmms-eval's or --include-path's), the model is there (a folder, the local cache, or a reachable
hub), it has a text tower whose CLIP fits it, the tasks that call a paid judge have its API key, and every dataset
is local or the hub is reachable (see :mod:`rclib.eval.taskdata`).
"""
from __future__ import annotations

import os
from pathlib import Path

from rclib.eval.checkpoints import check_text_encoder, config_of
from rclib.eval.grid import GridConfig
from rclib.eval.taskdata import check_data, check_tasks, hub_offline
from rclib.models.registry import MODELS

# tasks whose metric asks an OpenAI model to match answers -> the task scoring the same column offline
JUDGED_TASKS = {"mmbench_en_dev": "mmbench_en_dev_static", "mmbench_en_test": "mmbench_en_dev_static"}
JUDGE_KEYS = ("OPENAI_API_KEY", "AZURE_API_KEY")


def model_arg_dict(text: str) -> dict[str, str]:
    """``--model-args`` as a dict (cli.check_model_args has checked its form)."""
    return dict(part.split("=", 1) for part in filter(None, (p.strip() for p in text.split(","))))


def check_model_there(model: str) -> None:
    """Raise when a checkpoint outside the registry is no folder and not in the local cache while offline."""
    from rclib.models.loading import check_exists_locally

    if model in MODELS or config_of(model) is not None:
        return
    check_exists_locally(model)
    if hub_offline():
        raise ValueError(f"{model!r} is not in the local Hugging Face cache and the hub is offline (HF_HUB_OFFLINE): "
                         f"on a machine with network run `hf download {model}`, or pass a local folder")


def check_judges(tasks: tuple[str, ...]) -> None:
    judged = [t for t in tasks if t in JUDGED_TASKS]
    if judged and not any(os.environ.get(key) for key in JUDGE_KEYS):
        swaps = ", ".join(f"{t} -> {JUDGED_TASKS[t]}" for t in judged)
        raise ValueError(f"{', '.join(judged)} match free answers to options with the OpenAI API: set OPENAI_API_KEY "
                         f"(or AZURE_API_KEY), or use the offline matching ({swaps}; the same table column)")


def check_setup(config: GridConfig) -> None:
    """Every check of the module, cheapest first."""
    include = (Path(config.include_path),) if config.include_path else ()
    check_tasks(config.tasks, include)
    check_judges(config.tasks)
    check_model_there(config.model)
    check_text_encoder(config.model, model_arg_dict(config.model_args).get("text_encoder"))
    check_data(config.tasks, config.data, include)
