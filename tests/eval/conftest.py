"""lmms-eval as users run it: its own command line in a subprocess, offline, one thread per process.

The subprocesses import this checkout's rclib and find the model ``rclib`` through the entry point that
pyproject.toml declares (written as package metadata into a temporary folder, so the test needs no
reinstall of rclib).
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from lmms_runs import N_QUESTIONS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def lmms_env(tmp_path_factory) -> dict:
    """Environment of lmms-eval subprocesses."""
    metadata = tmp_path_factory.mktemp("entry-point")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["lmms_eval.models"]
    info = metadata / "rclib_lmms_eval_entry_point-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rclib-lmms-eval-entry-point\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[lmms_eval.models]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(metadata)]), "OMP_NUM_THREADS": "1",
            "RCLIB_CACHE": str(tmp_path_factory.mktemp("rclib-cache")), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="session")
def shapes_tasks(lmms_env) -> Path:
    """The ShapesWorld task folder of N_QUESTIONS bench questions."""
    from rclib.eval.shapesworld import tasks_dir

    return tasks_dir(root=Path(lmms_env["RCLIB_CACHE"]), n=N_QUESTIONS)
