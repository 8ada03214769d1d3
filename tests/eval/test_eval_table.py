"""`rclib table` on hand-made lmms-eval result folders: rows, merging, visual tokens, share of full, outputs."""
from __future__ import annotations

import csv
import json

import pytest

from rclib.cli import main
from rclib.eval.table import markdown, reported_rows, table_rows


def write_results(folder, name: str, model: str, model_args: str, date: str, results: dict, samples: dict,
                  tokens: dict | None = None) -> None:
    """A results file as lmms-eval writes it (the fields rclib table reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    throughput = {f"avg_visual_tokens/{task}": value for task, value in (tokens or {}).items()}
    (folder / f"{name}_results.json").write_text(json.dumps({
        "results": {task: {f"{k},none": v for k, v in metrics.items()} | {"alias": task} for task, metrics in
                    results.items()},
        "n-samples": {task: {"original": n, "effective": n} for task, n in samples.items()},
        "config": {"model": model, "model_args": model_args}, "date": date, "throughput": throughput}))


@pytest.fixture
def folders(tmp_path):
    cache = ",cache=/somewhere/responses,batch_size=8"
    samples = {"pope": 10, "mme": 4}
    write_results(tmp_path / "full_all" / "shapes", "20260101_000000", "rclib", "pretrained=shapes,method=full" + cache,
                  "20260101_000000", {"pope": {"pope_f1_score": 0.8, "pope_accuracy": 0.9}, "mme": {
                      "mme_perception_score": 1500.0, "mme_cognition_score": 300.0}}, samples, {"pope": 144, "mme": 144})
    write_results(tmp_path / "rc_adaptive" / "shapes", "20260101_000100", "rclib", "pretrained=shapes,method=rc" + cache,
                  "20260101_000100", {"pope": {"pope_f1_score": 0.72}, "mme": {"mme_perception_score": 1350.0}}, samples,
                  {"pope": 50, "mme": 71})
    # one cell in two runs: mme from the first, pope from both (the newer wins)
    rc_64 = tmp_path / "rc_64" / "shapes"
    write_results(rc_64, "20260101_000200", "rclib", "pretrained=shapes,method=rc,budget=64", "20260101_000200",
                  {"pope": {"pope_f1_score": 0.5}, "mme": {"mme_perception_score": 1200.0}}, samples, {"pope": 64, "mme": 64})
    write_results(rc_64, "20260102_000000", "rclib", "pretrained=shapes,method=rc,budget=64", "20260102_000000",
                  {"pope": {"pope_f1_score": 0.7}}, {"pope": 10}, {"pope": 64})
    write_results(tmp_path / "released", "20260101_000300", "rclib", "pretrained=shapes,method=rc,budget=64,"
                  "preset=released", "20260101_000300", {"pope": {"pope_f1_score": 0.6}}, {"pope": 10}, {"pope": 64})
    write_results(tmp_path / "elsewhere" / "llava", "20260101_000400", "llava_hf",
                  "pretrained=llava-hf/llava-1.5-7b-hf", "20260101_000400",
                  {"pope": {"pope_f1_score": 0.86}, "seedbench": {"acc": 0.6, "acc_stderr": 0.01}}, {"pope": 10})
    return [tmp_path / "full_all", tmp_path / "rc_adaptive", tmp_path / "rc_64", tmp_path / "released",
            tmp_path / "elsewhere"]


def test_rows_from_result_folders(folders):
    rows = table_rows(folders)
    expected = [
        {"source": "measured", "model": "llava-hf/llava-1.5-7b-hf", "method": "llava_hf", "budget": "all",
         "options": None, "limit": None, "visual_tokens": None, "POPE": 86.0, "seedbench": 0.6, "share_of_full": None},
        {"source": "measured", "model": "shapes", "method": "full", "budget": "all", "options": None, "limit": None,
         "visual_tokens": 144.0,
         "MME": 1500.0, "POPE": 80.0, "share_of_full": 100.0},
        {"source": "measured", "model": "shapes", "method": "rc", "budget": "adaptive", "options": None, "limit": None,
         "visual_tokens": (50 * 10 + 71 * 4) / 14, "MME": 1350.0, "POPE": 72.0, "share_of_full": 90.0},
        {"source": "measured", "model": "shapes", "method": "rc", "budget": "64", "options": None, "limit": None,
         "visual_tokens": 64.0,
         "MME": 1200.0, "POPE": 70.0, "share_of_full": (70 / 80 + 1200 / 1500) / 2 * 100},
        {"source": "measured", "model": "shapes", "method": "rc", "budget": "64", "options": "preset=released",
         "limit": None, "visual_tokens": 64.0, "POPE": 60.0, "share_of_full": 75.0},
    ]
    assert rows == [pytest.approx(row) for row in expected]


def test_reported_rows_are_labelled_and_share_their_own_full():
    rows = reported_rows()
    assert {row["source"] for row in rows} == {"reported (RC paper)"}
    rc = next(row for row in rows if row["method"] == "rc")
    assert rc["POPE"] == 72.00 and rc["MME"] == 1284.9
    assert rc["share_of_full"] == pytest.approx(100 * (69.01 / 68.40 + 55.51 / 58.20 + 1284.9 / 1476.9 + 70.41 / 79.10
                                                       + 72.00 / 86.40 + 57.90 / 66.10) / 6)


def test_markdown_and_csv(folders, tmp_path, capsys):
    out = tmp_path / "table"
    assert main(["table", *map(str, folders), "--reported", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    header = ("| source | model | method | budget | options | limit | visual_tokens | SQA-IMG | TextVQA | MME | VQAv2 "
              "| POPE | MMB | "
              "seedbench | share_of_full |")
    assert printed.startswith(header) and (out / "table.md").read_text() in printed
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == header.strip("| ").split(" | ")
    assert [(r["method"], r["budget"], r["POPE"]) for r in rows][:3] == [("llava_hf", "all", "86.0"),
                                                                       ("full", "all", "80.0"), ("rc", "adaptive", "72.0")]
    assert rows[-1]["source"] == "reported (RC paper)" and rows[-1]["method"] == "rc"
    assert markdown(table_rows(folders)).count("\n") == 2 + 5


def test_no_results_is_a_clear_error(tmp_path, capsys):
    assert main(["table", str(tmp_path)]) == 2
    assert "no lmms-eval results" in capsys.readouterr().err


def test_options_and_limit_get_columns_and_keep_share_of_full(tmp_path):
    options = ",image_preprocess=pad,prompt_format=vicuna_v1"
    for method, f1, limit in (("full", 0.8, None), ("rc", 0.6, None), ("rc", 0.5, 200.0)):
        folder = tmp_path / f"{method}_{limit}" / "x"
        write_results(folder, "20260101_000000", "rclib", f"pretrained=/ckpt/llava-1.5-7b,method={method}" + options,
                      "20260101_000000", {"pope": {"pope_f1_score": f1}}, {"pope": 10})
        if limit:  # lmms-eval records --limit in the run's config
            path = folder / "20260101_000000_results.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), "config": {
                "model": "rclib", "model_args": f"pretrained=/ckpt/llava-1.5-7b,method={method}" + options,
                "limit": limit}}))
    rows = table_rows([tmp_path])
    assert [(r["method"], r["options"], r["limit"], r["share_of_full"]) for r in rows] == [
        ("full", "image_preprocess=pad,prompt_format=vicuna_v1", None, pytest.approx(100.0)),
        ("rc", "image_preprocess=pad,prompt_format=vicuna_v1", None, pytest.approx(75.0)),
        ("rc", "image_preprocess=pad,prompt_format=vicuna_v1", "200", None)]  # no full row run with --limit 200


def test_a_damaged_results_file_does_not_stop_the_grid(tmp_path, capsys):
    """rclib eval's resume check reads the cell's results files as the table does: a damaged one is named and the
    cell counts as not finished (it runs again), instead of a KeyError stopping the whole grid."""
    from rclib.eval.grid import GridConfig, finished

    (tmp_path / "a_results.json").write_text('{"results": {}}')  # no "config"
    (tmp_path / "b_results.json").write_text("{not json")
    assert not finished(tmp_path, GridConfig(tasks=("mme",)), "rc", "64")
    err = capsys.readouterr().err
    assert "a_results.json" in err and "b_results.json" in err
