"""Nothing a user owns is lost: training never writes over models it did not make and saves a
bound pair or nothing; an output folder is replaced only when it holds nothing but the same command's own files;
links are followed; one writer per folder (eval too); permissions come from the umask."""
import os
import shutil
import time

import pytest

import rclib.gallery
from rclib.cli import main, parser
from rclib.models import load
from rclib.models.manifest import MANIFEST, write_manifest
from rclib.outputs import MARKER, atomic_file, folder_lock, output_folder


@pytest.fixture
def ask(image, tiny_args):
    return ["answer", "--image", image, "--question", "what colour ?", *tiny_args]


@pytest.fixture
def pair(tmp_path, tiny_llava_dir, tiny_clip_dir):
    """A copy of the tiny LLaVA and CLIP as train-shapes lays them out, bound by a manifest."""
    shutil.copytree(tiny_llava_dir, tmp_path / "models" / "shapes-llava")
    shutil.copytree(tiny_clip_dir, tmp_path / "models" / "shapes-clip")
    write_manifest(tmp_path / "models")
    return tmp_path / "models"


def load_pair(folder):
    return load(folder / "shapes-llava", text_encoder=folder / "shapes-clip", device="cpu")


# Training refuses a folder holding another run's models (the shipped data/models too) before it starts.
def test_training_refuses_a_folder_of_another_runs_models_before_it_starts(error_of, pair):
    assert parser().parse_args(["train-shapes"]).out == "out/shapes-models"
    before = {p: p.stat().st_mtime_ns for p in pair.rglob("*")}
    started = time.monotonic()
    line = error_of(["train-shapes", "--quick", "--out", str(pair)])
    assert time.monotonic() - started < 5
    assert "already holds shapes-clip, shapes-llava of another run: pass a new or empty folder" in line
    assert {p: p.stat().st_mtime_ns for p in pair.rglob("*")} == before


# An interrupt while saving leaves neither model (no new shapes-clip beside an old shapes-llava).
def test_an_interrupted_save_leaves_no_model(tmp_path, monkeypatch):
    from rclib.shapes.build import build_all
    from rclib.shapes.train import save_models

    clip, tokenizer, llava, processor = build_all()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(type(llava), "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_models(clip, tokenizer, llava, processor, tmp_path)
    assert list(tmp_path.iterdir()) == [], "neither model folder nor the staging folder may stay"


# rclib.load refuses a shapes-clip and shapes-llava that were not saved together (the manifest binds them).
def test_load_refuses_a_pair_that_was_not_saved_together(pair, tmp_path):
    load_pair(pair)
    other = tmp_path / "other"
    shutil.copytree(pair, other)
    write_manifest(other)  # another run's pair: another pair id
    shutil.rmtree(pair / "shapes-clip")
    shutil.copytree(other / "shapes-clip", pair / "shapes-clip")
    with pytest.raises(ValueError, match="were saved by different runs"):
        load_pair(pair)
    (pair / "shapes-clip" / MANIFEST).unlink()  # a text tower from before manifests beside a bound LLaVA
    with pytest.raises(ValueError, match=r"shapes-llava' was saved as a pair with another text tower"):
        load_pair(pair)
    write_manifest(pair)
    (pair / "shapes-clip" / "tokenizer.json").write_text("{}")  # a tokenizer swapped after saving
    with pytest.raises(ValueError, match=r"tokenizer.json in '.*shapes-clip' differ from what rclib-manifest.json"):
        load_pair(pair)


# An output folder holding anything but the same command's own files (another command's results, a user's file)
# is refused, naming what it holds.
def test_an_output_folder_holding_anything_else_is_refused_naming_it(error_of, no_model_load, ask, tmp_path):
    evals = tmp_path / "evals"
    (evals / "rc_64" / "shapes").mkdir(parents=True)
    (evals / "rc_64" / "shapes" / "x_results.json").write_text("{}")
    line = error_of([*ask, "--out", str(evals)])
    assert "holds what rclib did not write (rc_64, rc_64/shapes, rc_64/shapes/x_results.json)" in line
    bench = tmp_path / "bench"
    with output_folder(bench, "bench") as folder:
        (folder / "results.json").write_text("[]")
    assert "holds the output of `rclib bench`: pass another folder" in error_of([*ask, "--out", str(bench)])
    answer = tmp_path / "answer"
    with output_folder(answer, "answer") as folder:
        (folder / "result.json").write_text("{}")
    (answer / "my-notes.txt").write_text("mine")
    assert "holds what rclib did not write (my-notes.txt)" in error_of([*ask, "--out", str(answer)])
    assert (answer / "my-notes.txt").read_text() == "mine" and (evals / "rc_64" / "shapes" / "x_results.json").exists()


def test_a_folder_of_the_commands_own_files_is_replaced(tmp_path):
    target = tmp_path / "out"
    for version in ("v1", "v2"):
        with output_folder(target, "answer") as folder:
            (folder / "sub").mkdir()
            (folder / "sub" / "result.json").write_text(version)
    assert (target / "sub" / "result.json").read_text() == "v2"


# `figures` never overwrites a user's own file, and an interrupt keeps the previous figures whole.
def test_figures_never_overwrite_a_users_file_and_an_interrupt_keeps_the_previous(error_of, no_model_load, tmp_path,
                                                                                  monkeypatch, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "overview.png").write_bytes(b"my own figure")
    assert "holds what rclib did not write (overview.png)" in error_of(["figures", "--out", str(mine)])
    assert (mine / "overview.png").read_bytes() == b"my own figure"

    def render(folder, model):
        (folder / "overview.png").write_bytes(b"complete")
        return [folder / "overview.png"]
    monkeypatch.setattr(rclib.gallery, "render_figures", render)
    out = tmp_path / "figures"
    assert main(["figures", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "overview.png")

    def interrupted(folder, model):
        (folder / "overview.png").write_bytes(b"trunc")
        raise KeyboardInterrupt
    monkeypatch.setattr(rclib.gallery, "render_figures", interrupted)
    assert main(["figures", "--out", str(out)]) == 130
    assert (out / "overview.png").read_bytes() == b"complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "mine"], "no temporary folder left"


# An output link is followed: the link stays, no `.link.old-*` is left behind.
def test_an_output_link_is_followed(tmp_path):
    real = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    for version in ("v1", "v2"):
        with output_folder(link, "answer") as folder:
            (folder / "result.json").write_text(version)
    assert link.is_symlink() and (real / "result.json").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"], "no .old or .tmp folder stays"
    file_link = tmp_path / "result-link.json"
    file_link.symlink_to(real / "result.json")
    with atomic_file(file_link) as file:
        file.write("v3")
    assert file_link.is_symlink() and (real / "result.json").read_text() == "v3"


# A second eval into a folder another eval is writing fails at once: one writer per folder.
def test_a_second_eval_into_the_same_folder_fails_at_once(error_of, no_model_load, tmp_path, monkeypatch):
    import rclib.eval.grid

    def never(*args, **kwargs):
        raise AssertionError("the grid ran beside another writer")
    monkeypatch.setattr(rclib.eval.grid, "run_grid", never)
    out = tmp_path / "eval"
    with folder_lock(out):
        line = error_of(["eval", "--tasks", "shapesworld", "--out", str(out)])
    assert "another process is writing" in line and "wait for it to finish" in line


# Files and folders get their permissions from the umask.
@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_permissions_follow_the_umask(tmp_path, umask, folder_mode, file_mode):
    previous = os.umask(umask)
    try:
        with output_folder(tmp_path / "out", "answer") as folder:
            with atomic_file(folder / "result.json") as file:
                file.write("{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == folder_mode
    for path in (tmp_path / "out" / "result.json", tmp_path / "out" / MARKER):
        assert path.stat().st_mode & 0o777 == file_mode, path.name
