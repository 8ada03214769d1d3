"""Outputs: atomic files, all-or-nothing folders, one writer at a time, JSON without NaN."""
import json
import os
import subprocess
import sys

import pytest

from rclib.outputs import (MARKER, OutputBusy, atomic_file, check_output_folder, output_folder, recover, to_json,
                           write_json)


def strict_json(text: str):
    """json.loads that fails on NaN / Infinity, as most JSON readers do."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def write_version(target, version: str, files=("result.json", "figure.png")):
    with output_folder(target) as folder:
        for name in files:
            (folder / name).write_text(version)


def contents(folder):
    return {p.name: p.read_text() for p in folder.iterdir() if p.name != MARKER}


# JSON never holds NaN or inf: they are written as null.
def test_json_never_holds_nan(tmp_path):
    row = {"accuracy": float("nan"), "recall": [1.0, float("inf"), -float("inf")], "n": 0, "budgets": ("a", 8)}
    write_json(tmp_path / "results.json", row)
    assert strict_json((tmp_path / "results.json").read_text()) == {"accuracy": None, "recall": [1.0, None, None],
                                                                     "n": 0, "budgets": ["a", 8]}
    with pytest.raises(ValueError, match="cannot write set as JSON"):
        to_json({1, 2})


# An interrupted write leaves the previous complete folder, never a new result beside stale figures.
def test_an_interrupted_write_leaves_the_previous_complete_folder(tmp_path):
    target = tmp_path / "out"
    write_version(target, "v1")
    with pytest.raises(KeyboardInterrupt), output_folder(target) as folder:
        (folder / "result.json").write_text("v2")
        raise KeyboardInterrupt
    assert contents(target) == {"result.json": "v1", "figure.png": "v1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temporary folder or lock is left behind"


def test_an_interrupt_between_the_two_renames_puts_the_previous_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "out"
    write_version(target, "v1")
    real_rename = os.rename

    def rename_then_die(src, dst):
        if str(src).endswith("out") and ".old-" in str(dst):  # the first of the two renames of the swap
            real_rename(src, dst)
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_version(target, "v2")
    assert contents(target) == {"result.json": "v1", "figure.png": "v1"}


def test_a_killed_run_is_recovered_by_the_next_one(tmp_path):
    target = tmp_path / "out"
    killed = tmp_path / ".out.old-1234"  # killed between its two renames: the previous output is here
    killed.mkdir()
    (killed / "result.json").write_text("v1")
    (tmp_path / ".out.tmp-5678").mkdir()  # killed while writing
    recover(target)
    assert contents(target) == {"result.json": "v1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# A second run replaces the whole folder: no files of the first one stay.
def test_a_second_run_replaces_the_whole_folder(tmp_path):
    target = tmp_path / "out"
    write_version(target, "v1", files=("result.json", "overview.png"))
    write_version(target, "v2", files=("result.json",))
    assert contents(target) == {"result.json": "v2"}, "the first run's figure must not stay beside the second result"


def test_a_second_concurrent_writer_fails_clearly(tmp_path):
    target = tmp_path / "out"
    with output_folder(target) as folder:
        (folder / "result.json").write_text("first")
        with pytest.raises(OutputBusy, match="another process is writing .* wait for it to finish"):
            write_version(target, "second")
        other = subprocess.run([sys.executable, "-c", f"from rclib.outputs import output_folder\n"
                                f"with output_folder({str(target)!r}): pass"], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert other.returncode == 1 and "OutputBusy: another process is writing" in other.stderr
    assert contents(target) == {"result.json": "first"}


# A reader sees the previous result until the new one is complete, never an empty result.json.
def test_a_reader_sees_the_previous_result_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "out"
    write_version(target, "v1")
    with output_folder(target) as folder:
        (folder / "result.json").write_text("v2 half")
        assert (target / "result.json").read_text() == "v1"
        (folder / "result.json").write_text("v2")
    assert (target / "result.json").read_text() == "v2"
    with pytest.raises(RuntimeError), atomic_file(target / "result.json") as file:
        file.write("v3 half")
        raise RuntimeError("interrupted")
    assert (target / "result.json").read_text() == "v2"
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "result.json"], "no temporary file is left"


def test_a_folder_of_other_files_is_never_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match=r"holds what rclib did not write \(thesis.tex\): pass a new or empty folder"):
        write_version(tmp_path / "mine", "v1")
    assert contents(tmp_path / "mine") == {"thesis.tex": "years of work"}
    (tmp_path / "empty").mkdir()
    write_version(tmp_path / "empty", "v1")
    assert contents(tmp_path / "empty") == {"result.json": "v1", "figure.png": "v1"}


# An output at a file or an unwritable place is refused before anything is written.
def test_output_at_a_file_or_an_unwritable_place_is_refused_before_writing(tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "taken")
    with pytest.raises(ValueError, match=r"cannot write '.*taken/out': '.*taken' is a file, not a folder"):
        check_output_folder(tmp_path / "taken" / "out")
    with pytest.raises(ValueError, match=r"cannot write '/proc/rclib-out': '/proc' is not writable .*; pass another"):
        check_output_folder("/proc/rclib-out")
    assert (tmp_path / "taken").read_text() == "a file"
