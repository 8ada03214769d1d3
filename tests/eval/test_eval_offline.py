"""`rclib eval` without network: the paper's command (--paper) on tiny local copies of two benchmark layouts and
a tiny LLaVA, then `rclib table`; and the configuration errors it gives before lmms-eval starts."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from benchmark_copies import build

from rclib.cli import main

LIMIT = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build(tmp_path_factory.mktemp("eval-data"))


@pytest.fixture(scope="module")
def offline_env(lmms_env, tmp_path_factory) -> dict:
    return {**lmms_env, "HF_HOME": str(tmp_path_factory.mktemp("hf-home")), "OPENAI_API_KEY": ""}


def test_paper_command_runs_offline_on_local_benchmark_copies(data, offline_env, tiny_llava_dir, tiny_clip_dir,
                                                              tmp_path):
    out, table = tmp_path / "paper", tmp_path / "table"
    argv = ["--paper", "--methods", "full,rc", "--tasks", "pope,scienceqa_img", "--model", str(tiny_llava_dir),
            "--model-args", f"text_encoder={tiny_clip_dir},device=cpu", "--data", str(data), "--out", str(out),
            "--limit", str(LIMIT), "--batch-size", "2"]
    done = subprocess.run([sys.executable, "-m", "rclib", "eval", *argv], env=offline_env, capture_output=True,
                          text=True, timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 cells of 6 questions" in done.stdout and "GPU hours" in done.stdout  # the estimate, before the cells
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["full_all", "rc_adaptive"]
    again = subprocess.run([sys.executable, "-m", "rclib", "eval", *argv], env=offline_env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("done before, skipped") == 2

    assert main(["table", str(out), "--reported", "--out", str(table)]) == 0
    with open(table / "table.csv") as f:
        rows = list(csv.DictReader(f))
    measured = [r for r in rows if r["source"] == "measured"]
    assert [(r["method"], r["budget"], r["limit"]) for r in measured] == [("full", "all", "3"), ("rc", "adaptive", "3")]
    assert all(r["POPE"] != "" and r["SQA-IMG"] != "" for r in measured)  # a random tiny LLaVA: scores near 0
    assert float(measured[0]["visual_tokens"]) == 64 > float(measured[1]["visual_tokens"])
    rc_reported = next(r for r in rows if r["source"] != "measured" and r["method"] == "rc")
    assert float(rc_reported["visual_tokens"]) == pytest.approx(57.6)
    results = json.loads(next((out / "full_all").rglob("*_results.json")).read_text())
    assert results["n-samples"]["pope"]["effective"] == LIMIT


def fails_fast(argv: list[str], capsys, monkeypatch) -> str:
    """rclib eval's error line for argv, checked to come before any lmms-eval run (which takes ~25 s to start)."""
    import rclib.eval.grid

    def no_run(*args, **kwargs):
        raise AssertionError(f"lmms-eval started: {args}")

    monkeypatch.setattr(rclib.eval.grid.subprocess, "run", no_run)
    assert main(["eval", *argv]) == 2
    return capsys.readouterr().err


def test_unknown_task_is_named_with_close_ones(tmp_path, capsys, monkeypatch):
    err = fails_fast(["--tasks", "popee", "--out", str(tmp_path / "o")], capsys, monkeypatch)
    assert "popee" in err and "pope" in err and "--include-path" in err


def test_missing_dataset_names_the_folders_looked_at(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    err = fails_fast(["--tasks", "scienceqa_img", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")], capsys,
                     monkeypatch)
    assert str(tmp_path / "d" / "lmms-lab-encoder" / "ScienceQA") in err and "ScienceQA-IMG" in err
    assert str(tmp_path / "hf" / "datasets" / "lmms-lab-encoder___science_qa") in err and "--fetch" in err


def test_missing_text_encoder_says_what_to_pass(tiny_llava_dir, tmp_path, capsys, monkeypatch):
    err = fails_fast(["--tasks", "shapesworld", "--model", str(tiny_llava_dir), "--out", str(tmp_path / "o")], capsys,
                     monkeypatch)
    assert "--model-args text_encoder=" in err


def test_text_encoder_of_another_clip_is_refused(tiny_llava_dir, tmp_path, capsys, monkeypatch):
    err = fails_fast(["--tasks", "shapesworld", "--model", str(tiny_llava_dir), "--model-args",
                      "text_encoder=open_clip-vit-large-patch14-336", "--out", str(tmp_path / "o")], capsys,
                     monkeypatch)
    assert "(336, 14, 1024, 24)" in err and "(64, 8, 32, 3)" in err


def test_judged_task_without_a_key_offers_the_offline_one(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("AZURE_API_KEY", raising=False)
    err = fails_fast(["--tasks", "mmbench_en_dev", "--out", str(tmp_path / "o")], capsys, monkeypatch)
    assert "OPENAI_API_KEY" in err and "mmbench_en_dev_static" in err


def test_paper_without_a_key_scores_mmb_offline(monkeypatch):
    from rclib.eval.benchmarks import benchmark_for, paper_tasks

    assert paper_tasks(judge_key=False) == ("scienceqa_img", "textvqa_val", "mme", "vqav2_val", "pope",
                                            "mmbench_en_dev_static")
    assert benchmark_for("mmbench_en_dev_static").column == benchmark_for("mmbench_en_dev").column == "MMB"


def test_task_data_reads_the_task_files():
    from rclib.eval.taskdata import TaskData, task_data

    assert task_data("scienceqa_img") == [TaskData("lmms-lab-encoder/ScienceQA", "ScienceQA-IMG", "test")]
    assert set(task_data("gqa")) == {TaskData("lmms-lab-encoder/GQA", "testdev_balanced_instructions", "testdev"),
                                     TaskData("lmms-lab-encoder/GQA", "testdev_balanced_images", "testdev")}
    assert task_data("textvqa_val") == [TaskData("lmms-lab-encoder/textvqa", None, "validation")]


def test_fetch_plans_the_files_of_the_tasks_config_and_split(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import huggingface_hub

    from rclib.eval.fetch import describe, plan
    from rclib.eval.taskdata import TaskData

    files = {"README.md": 100, "ScienceQA-IMG/test-00000-of-00001.parquet": 2 * 10**9,
             "ScienceQA-IMG/train-00000-of-00004.parquet": 9 * 10**9, "ScienceQA-FULL/test-00000.parquet": 10**9}
    api = SimpleNamespace(dataset_info=lambda repo, files_metadata: SimpleNamespace(
        siblings=[SimpleNamespace(rfilename=f, size=n) for f, n in files.items()]))
    card = tmp_path / "README.md"
    card.write_text("---\nconfigs:\n- config_name: ScienceQA-IMG\n  data_files:\n  - split: test\n    path: "
                    "ScienceQA-IMG/test-*\n  - split: train\n    path: ScienceQA-IMG/train-*\n---\n")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, repo_type: str(card))
    [download] = plan([TaskData("lmms-lab-encoder/ScienceQA", "ScienceQA-IMG", "test")], api)
    assert download.files == ("README.md", "ScienceQA-IMG/test-00000-of-00001.parquet")
    assert download.size == 2 * 10**9 + 100
    assert "2.00 GB" in describe([download], tmp_path) and str(tmp_path / "lmms-lab-encoder/ScienceQA") in \
        describe([download], tmp_path)


def test_fetch_offline_says_where_to_run_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = fails_fast(["--paper", "--fetch", "--data", str(tmp_path / "d")], capsys, monkeypatch)
    assert "machine with network" in err and not (tmp_path / "d").exists()


def test_paper_cells_are_the_reported_rows():
    from rclib.cli import parser
    from rclib.eval.commands import grid_config

    config = grid_config(parser().parse_args(["eval", "--paper"]))
    assert config.model == "llava-1.5-7b"
    assert config.cells == (("full", "all"), ("tome", "58"), ("prumerge", "adaptive"), ("rc", "adaptive"))
    assert grid_config(parser().parse_args(["eval", "--paper", "--methods", "rc,tome"])).cells == (("tome", "58"),
                                                                                                  ("rc", "adaptive"))
    with pytest.raises(ValueError, match="paper's rows"):
        grid_config(parser().parse_args(["eval", "--paper", "--methods", "fastv"]))
