"""lmms-eval's own command line on the embedded model and ShapesWorld: the scores of rclib bench, the visual
tokens the LLM saw, data-parallel processes, and a killed run that resumes without answering twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lmms_runs import N_QUESTIONS, results_in, run_lmms_eval

CELLS = {"full": "pretrained=shapes,method=full", "rc": "pretrained=shapes,method=rc"}  # rc: adaptive K


@pytest.fixture(scope="module")
def one_process(lmms_env, shapes_tasks, tmp_path_factory) -> dict[str, dict]:
    """lmms-eval's results for full and rc (one process each)."""
    out = tmp_path_factory.mktemp("lmms-eval")
    return {name: run_lmms_eval(lmms_env, args, shapes_tasks, out / name) for name, args in CELLS.items()}


@pytest.fixture(scope="module")
def shapes_model():
    from rclib.models import load

    return load("shapes")


@pytest.fixture(scope="module")
def bench_rows(shapes_model) -> dict[str, dict]:
    """rclib bench on the same questions (its seed, N_QUESTIONS of them)."""
    from rclib.bench import BenchConfig, run_bench

    rows = run_bench(shapes_model, BenchConfig(methods=tuple(CELLS), budgets=("adaptive",), n=N_QUESTIONS),
                     progress=False)
    return {row["method"]: row for row in rows}


def family_scores(results: dict) -> dict[str, float]:
    """lmms-eval's ShapesWorld metrics named as rclib bench names them."""
    from rclib.shapes.world import FAMILIES

    scores = {"accuracy": results["results"]["shapesworld"]["accuracy,none"]}
    for family in FAMILIES:
        metrics = results["results"][f"shapesworld_{family}"]
        scores[f"accuracy_{family}"] = metrics["accuracy,none"]
        scores |= {name: metrics[f"{name},none"] for name in ("existence_f1", "existence_yes_ratio")
                   if f"{name},none" in metrics}
    return scores


@pytest.mark.parametrize("cell", CELLS)
def test_lmms_eval_scores_equal_rclib_bench(cell, one_process, bench_rows):
    results, row = one_process[cell], bench_rows[cell]
    scores = family_scores(results)
    assert scores == pytest.approx({name: row[name] for name in scores})
    assert set(scores) == {k for k in row if k == "accuracy" or k.startswith(("accuracy_", "existence_"))}
    assert sum(n["effective"] for n in results["n-samples"].values()) == N_QUESTIONS
    assert results["throughput"]["avg_visual_tokens"] == pytest.approx(row["mean_tokens"])


def test_visual_tokens_vary_per_sample_under_rc(one_process, shapes_model):
    throughput = one_process["rc"]["throughput"]
    per_task = [v for k, v in throughput.items() if k.startswith("avg_visual_tokens/")]
    assert len(per_task) == 5 and len(set(per_task)) > 1, "RC's adaptive K should differ between families"
    vision = shapes_model.model.config.vision_config
    assert one_process["full"]["throughput"]["avg_visual_tokens"] == (vision.image_size // vision.patch_size) ** 2


def test_two_cpu_processes_score_like_one(lmms_env, shapes_tasks, one_process, tmp_path):
    from rclib.eval.grid import GridConfig, command, launch_env

    config = GridConfig(methods=("rc",), budgets=("adaptive",), out=tmp_path, processes=2, batch_size=4, limit=20)
    done = subprocess.run(command(config, "rc", "adaptive", shapes_tasks), env={**lmms_env, **launch_env(config)},
                          capture_output=True, text=True, timeout=900)  # rclib eval's cell: accelerate launch
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((tmp_path / "rc_adaptive").rglob("*_results.json")), f"no results (lmms-eval exits 0 on errors):\n" \
        f"{done.stderr[-3000:]}"
    two = results_in(tmp_path / "rc_adaptive")
    assert family_scores(two) == family_scores(one_process["rc"])
    assert two["throughput"]["avg_visual_tokens"] == pytest.approx(one_process["rc"]["throughput"]["avg_visual_tokens"])
    assert two["n-samples"] == one_process["rc"]["n-samples"]
    answered = [audit_keys(tmp_path / "rc_adaptive" / "responses" / f"rank{r}.audit.jsonl") for r in (0, 1)]
    assert min(map(len, answered)) > 0, "both processes answer"
    assert len(set(answered[0]) | set(answered[1])) == N_QUESTIONS


def audit_keys(path) -> list[str]:
    """The cache keys of the answers a cell computed (one audit line per answer computed, none per cache hit)."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["cache_key"] for line in lines if line.strip()]


def test_killed_cell_resumes_without_answering_twice(lmms_env, tmp_path):
    n = 60
    command = [sys.executable, "-m", "rclib", "eval", "--methods", "rc", "--budgets", "adaptive", "--shapes-n", str(n),
               "--batch-size", "1", "--out", str(tmp_path)]
    audit = tmp_path / "rc_adaptive" / "responses" / "rank0.audit.jsonl"
    first = subprocess.Popen(command, env=lmms_env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while len(audit_keys(audit)) < 5:
        assert first.poll() is None, "the first run ended before it could be killed"
        assert time.monotonic() < deadline, "the first run answered nothing in 15 minutes"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = len(audit_keys(audit))
    assert before < n and not list(tmp_path.rglob("*_results.json"))

    resumed = subprocess.run(command, env=lmms_env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    keys = audit_keys(audit)
    assert len(keys) == len(set(keys)) == n, f"{len(keys)} answers computed for {n} questions ({before} before the kill)"
    results = results_in(tmp_path)
    assert sum(s["effective"] for s in results["n-samples"].values()) == n
    assert results["throughput"]["avg_visual_tokens"] > 0

    again = subprocess.run(command, env=lmms_env, capture_output=True, text=True, timeout=900)
    assert "rc_adaptive: done before, skipped" in again.stdout
    assert len(audit_keys(audit)) == n
