"""Which lmms-eval tasks exist and which hub datasets they read, and where those datasets must lie offline.

lmms-eval's task files (YAML) name a hub dataset (``dataset_path``, ``dataset_name``, ``test_split``) that it
loads with ``datasets.load_dataset``. Without network that call finds the data in one of two places, checked
here in the same order before any lmms-eval run starts:

- a folder at the dataset's hub id under the data folder (``<data>/lmms-lab-encoder/POPE``, the whole repo or
  the files of the task's config and split, with the repo's README.md when the task names a config);
  ``rclib eval --data DIR`` runs lmms-eval in DIR, so ``load_dataset("lmms-lab-encoder/POPE")`` reads it;
- ``datasets``' own cache (``$HF_DATASETS_CACHE``, default ``$HF_HOME/datasets``), filled by a run with network.

A folder of ``--include-path`` adds task files of one's own, as lmms-eval's ``--include_path`` does.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rclib.eval.shapesworld import GROUP as SHAPESWORLD

TASK_NAME = re.compile(r"^(?:task|group):\s*[\"']?([^\"'\s#\[]+)", re.MULTILINE)  # one-line task / group names
# Datasets a task's code loads besides its dataset_path (found by reading the tasks' utils.py)
EXTRA_DATASETS = {"gqa": (("lmms-lab-encoder/GQA", "testdev_balanced_images", "testdev"),)}
HUB = ("huggingface.co", 443)  # what a run without local data must reach


@dataclass(frozen=True)
class TaskData:
    """A hub dataset a task reads."""

    repo: str  # hub id, e.g. lmms-lab-encoder/POPE
    config: str | None  # dataset_name (a config of the repo), None: the default one
    split: str | None  # the split the task evaluates


def lmms_tasks_root() -> Path:
    """lmms-eval's own task folder."""
    return Path(importlib.util.find_spec("lmms_eval").origin).parent / "tasks"


def yaml_files(include_paths: tuple[Path, ...] = ()) -> list[Path]:
    return [p for root in (lmms_tasks_root(), *include_paths) for p in sorted(Path(root).rglob("*.yaml"))]


@lru_cache(maxsize=8)
def task_files(include_paths: tuple[Path, ...] = ()) -> dict[str, Path]:
    """Every task and group name -> its YAML file (read as text: lmms-eval's ``!function`` tags need no import)."""
    found = {}
    for path in yaml_files(include_paths):
        for name in TASK_NAME.findall(path.read_text(encoding="utf-8", errors="ignore")):
            found.setdefault(name, path)
    return found


def check_tasks(tasks: tuple[str, ...], include_paths: tuple[Path, ...] = ()) -> None:
    """Raise for a task lmms-eval does not know, with the closest names."""
    known = task_files(include_paths)
    unknown = [t for t in tasks if t not in known and not t.startswith(SHAPESWORLD)]
    if unknown:
        hints = [f"{t} (did you mean {', '.join(difflib.get_close_matches(t, known, n=3)) or 'none close'}?)"
                 for t in unknown]
        raise ValueError(f"unknown lmms-eval task(s): {'; '.join(hints)}. `python -m lmms_eval --tasks list` lists "
                         "them; a task file of your own: --include-path FOLDER")


def read_yaml(path: Path) -> dict:
    """A task file with its ``include:`` merged in (the file's own keys win); ``!function`` tags read as text."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, tag, node: None)
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader) or {}
    if isinstance(data.get("include"), str):
        data = {**read_yaml(path.parent / data["include"]), **data}
    return data


def task_data(task: str, include_paths: tuple[Path, ...] = ()) -> list[TaskData]:
    """The hub datasets a task (or every task of a group) reads; none for local tasks (ShapesWorld)."""
    if task.startswith(SHAPESWORLD):
        return []
    path = task_files(include_paths)[task]
    data = read_yaml(path)
    if isinstance(data.get("task"), list):  # a group: its tasks
        return [d for sub in data["task"] if isinstance(sub, str) for d in task_data(sub, include_paths)]
    found = [TaskData(*extra) for extra in EXTRA_DATASETS.get(task, ())]
    repo = data.get("dataset_path")
    kwargs = data.get("dataset_kwargs") or {}
    if not repo or kwargs.get("load_from_disk") or Path(repo).is_absolute():
        return found  # a folder of one's own: nothing to fetch
    return [TaskData(repo, data.get("dataset_name"), data.get("test_split")), *found]


def snake_case(name: str) -> str:
    """``datasets.naming.camelcase_to_snakecase`` (ScienceQA -> science_qa) without importing datasets (seconds)."""
    return re.sub(r"([a-z\d])([A-Z])", r"\1_\2", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)).lower()


def cache_folder(repo: str) -> Path:
    """Where ``datasets`` keeps a hub dataset it has loaded once (``<cache>/<owner>___<name in snake_case>``)."""
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    cache = Path(os.environ.get("HF_DATASETS_CACHE") or home / "datasets").expanduser()
    owner, _, name = repo.partition("/")
    return cache / f"{owner}___{snake_case(name)}"


def places(item: TaskData, data_dir: Path | None) -> list[Path]:
    """The folders that can hold a dataset offline, in the order ``datasets`` tries them (no data folder: the
    working directory, where lmms-eval then runs)."""
    return [Path(data_dir or ".").resolve() / item.repo, cache_folder(item.repo)]


def hub_offline() -> bool:
    return any(os.environ.get(name, "").upper() in {"1", "ON", "YES", "TRUE"}
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 1.5) -> bool:
    """True when a TCP connection to the hub opens within ``timeout`` seconds."""
    if hub_offline():
        return False
    try:
        socket.create_connection(HUB, timeout=timeout).close()
        return True
    except OSError:
        return False


def missing_data(tasks: tuple[str, ...], data_dir: Path | None,
                 include_paths: tuple[Path, ...] = ()) -> dict[TaskData, list[Path]]:
    """The datasets of the tasks found in none of their places -> the places looked at."""
    needed = {item for task in tasks for item in task_data(task, include_paths)}
    return {item: places(item, data_dir) for item in sorted(needed, key=str)
            if not any(p.is_dir() for p in places(item, data_dir))}


def check_data(tasks: tuple[str, ...], data_dir: Path | None, include_paths: tuple[Path, ...] = ()) -> None:
    """Raise, naming the folders looked at, when a task's dataset is not local and the hub cannot be reached."""
    missing = missing_data(tasks, data_dir, include_paths)
    if missing and not hub_reachable():
        where = "; ".join(f"{item.repo}" + (f" (config {item.config})" if item.config else "") + " looked for in "
                          + " and ".join(map(str, paths)) for item, paths in missing.items())
        folder = data_dir or "eval-data"
        raise ValueError(f"no local copy of {where}, and the Hugging Face hub is offline or unreachable. On a machine "
                         f"with network run `rclib eval --fetch --data {folder} --tasks {','.join(tasks)}` and copy "
                         f"that folder here, then pass --data {folder} (docs/eval.md, Offline)")
