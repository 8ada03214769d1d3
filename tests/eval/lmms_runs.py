"""Running lmms-eval's command line from tests, and reading what it wrote."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

N_QUESTIONS = 21  # ShapesWorld questions: 5 families, one split of 5 and four of 4 (uneven over 2 processes)


def lmms_eval_command(model_args: str, tasks: Path, out: Path) -> list[str]:
    """The command of the issue: python -m lmms_eval --model rclib ... --tasks shapesworld --limit 20."""
    return [sys.executable, "-m", "lmms_eval", "--model", "rclib", "--model_args", model_args, "--tasks",
            "shapesworld", "--include_path", str(tasks), "--limit", "20", "--batch_size", "4", "--output_path", str(out)]


def results_in(out: Path) -> dict:
    """The one lmms-eval results file under ``out``."""
    files = list(out.rglob("*_results.json"))
    assert len(files) == 1, f"expected one results file under {out}, found {files}"
    return json.loads(files[0].read_text())


def run_lmms_eval(env: dict, model_args: str, tasks: Path, out: Path) -> dict:
    """Run lmms-eval's command line and return its results (it exits 0 even when evaluation failed)."""
    done = subprocess.run(lmms_eval_command(model_args, tasks, out), env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0 and list(out.rglob("*_results.json")), done.stdout[-3000:] + done.stderr[-3000:]
    return results_in(out)
