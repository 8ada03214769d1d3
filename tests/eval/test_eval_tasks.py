"""ShapesWorld as lmms-eval tasks (data and task files), and `rclib eval`'s command line before it runs anything."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lmms_runs import N_QUESTIONS

from rclib.cli import main
from rclib.eval.benchmarks import PAPER_BENCHMARKS
from rclib.eval.grid import GridConfig, cell_name, command, model_args, run_grid


def test_tasks_hold_bench_questions_one_split_per_family(shapes_tasks):
    from datasets import load_from_disk

    from rclib.shapes.world import FAMILIES, sample_vqa

    samples = sample_vqa(1234, N_QUESTIONS)
    splits = load_from_disk(str(shapes_tasks.parent / "data"))
    assert sorted(splits) == sorted(FAMILIES)
    seen = []
    for family, split in splits.items():
        for row in split:
            sample = samples[row["index"]]
            assert (sample.family, sample.question, sample.answer) == (family, row["question"], row["answer"])
            assert (row["image"].convert("RGB").tobytes() == sample.image.tobytes())
            seen.append(row["index"])
        assert split[0]["metrics"] == (["accuracy", "existence_yes_ratio", "existence_f1"] if family == "existence"
                                       else ["accuracy"])
    assert sorted(seen) == list(range(N_QUESTIONS))  # every bench question once, in bench order within a family

    group = yaml.safe_load((shapes_tasks / "shapesworld.yaml").read_text())
    assert group["task"] == [f"shapesworld_{f}" for f in sorted(FAMILIES)]
    assert group["aggregate_metric_list"] == [{"metric": "accuracy", "aggregation": "mean", "weight_by_size": True}]


def test_tasks_dir_prints_the_include_path(shapes_tasks, capsys, monkeypatch):
    monkeypatch.setenv("RCLIB_CACHE", str(shapes_tasks.parents[1]))
    assert main(["eval", "--tasks-dir", "--shapes-n", str(N_QUESTIONS)]) == 0
    assert capsys.readouterr().out.strip() == str(shapes_tasks)


def test_help_lists_the_papers_benchmarks(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    for benchmark in PAPER_BENCHMARKS:
        assert f"{benchmark.column:<8} {benchmark.task:<16} {benchmark.metric}" in text


@pytest.mark.parametrize("argv, says", [(["--methods", "rc,foo"], "foo"), (["--budgets", "64,lots"], "lots"),
                                        (["--methods", "oracle"], "ground-truth"), (["--processes", "0"], "processes")])
def test_bad_grids_fail_before_running(argv, says, tmp_path, capsys):
    assert main(["eval", "--out", str(tmp_path), *argv]) == 2
    assert says in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_cell_commands(tmp_path):
    config = GridConfig(model="llava-1.5-7b", tasks=("pope", "mme"), out=tmp_path, processes=8, batch_size=16,
                        model_args="preset=released")
    assert cell_name("rc", "64/576") == "rc_64of576" and cell_name("full", "all") == "full_all"
    assert model_args(config, "full", "all") == (f"pretrained=llava-1.5-7b,method=full,"
                                                 f"cache={tmp_path.resolve()}/full_all/responses,preset=released")
    line = command(config, "rc", "64", None)
    assert line[1:3] == ["-m", "accelerate.commands.launch"] and line[line.index("--num_processes") + 1] == "8"
    lmms = line[line.index("lmms_eval") - 1:]
    assert lmms == ["-m", "lmms_eval", "--model", "rclib", "--model_args", model_args(config, "rc", "64"), "--tasks",
                    "pope,mme", "--batch_size", "16", "--output_path", str(tmp_path / "rc_64"), "--log_samples"]


def test_grid_skips_finished_cells_and_goes_on_past_a_failed_one(tmp_path, monkeypatch):
    import json
    import subprocess

    config = GridConfig(tasks=("pope",), methods=("full", "rc", "fastervlm"), budgets=("adaptive", "8"), out=tmp_path)

    def write_results(cell: str, method: str, budget: str, limit=None) -> None:
        (tmp_path / cell / "shapes").mkdir(parents=True, exist_ok=True)
        (tmp_path / cell / "shapes" / f"{limit}_results.json").write_text(json.dumps(
            {"results": {"pope": {}},
             "config": {"model": "rclib", "model_args": model_args(config, method, budget), "limit": limit}}))

    write_results("full_all", "full", "all")  # finished before
    write_results("rc_8", "rc", "8", limit=20.0)  # a quick look with --limit 20: not the cell's results
    ran = []

    def lmms_eval(argv, env, cwd):  # rc writes its results, fastervlm fails (lmms-eval exits 0 all the same)
        cell = Path(argv[argv.index("--output_path") + 1]).name
        ran.append(cell)
        if cell.startswith("rc"):
            write_results(cell, "rc", cell.split("_")[1])

    monkeypatch.setattr(subprocess, "run", lmms_eval)
    done, failed = run_grid(config)
    assert ran == ["rc_adaptive", "rc_8", "fastervlm_8"]
    assert done == [tmp_path / name for name in ("full_all", "rc_adaptive", "rc_8")] and failed == ["fastervlm_8"]
