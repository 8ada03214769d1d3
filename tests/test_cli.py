"""The CLI on the tiny models: the result.json contract, bad input, the bench outputs."""
import json
from contextlib import nullcontext

import pytest

from rclib.cli import main


@pytest.fixture
def tiny_args(tiny_llava_dir, tiny_clip_dir):
    return ["--model", str(tiny_llava_dir), "--text-encoder", str(tiny_clip_dir)]


def test_answer_writes_the_result_contract(tmp_path, tiny_args, tiny_images, capsys):
    from PIL import Image

    image = tmp_path / "image.png"
    Image.fromarray(tiny_images[0]).save(image)
    out = tmp_path / "out"
    code = main(["answer", "--image", str(image), "--question", "what colour is the circle ?", *tiny_args,
                 "--compare", "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    record = json.loads((out / "result.json").read_text())
    assert printed == record
    for key in ("model", "text_encoder", "method", "image", "question", "n_input_tokens", "n_output_tokens",
                "n_visual", "n_text", "n_merged", "kept_indices", "recovered_indices", "answer", "answer_full"):
        assert key in record, key
    assert set(record["seconds"]) == {"vision", "compress", "generate"}
    assert record["n_input_tokens"] == 64 and 0 < record["n_output_tokens"] <= 64
    assert record["kept_indices"] == sorted(record["kept_indices"]) and len(record["kept_indices"]) == record["n_visual"]
    assert list(out.glob("*.png")), "figures must be written beside result.json"


def test_answer_with_a_corrupt_image_names_the_file(tmp_path, tiny_args, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    code = main(["answer", "--image", str(broken), "--question", "what ?", *tiny_args])
    assert code == 2
    assert "broken.jpg" in capsys.readouterr().err


def test_bench_writes_rows_for_every_run(tmp_path, tiny_args):
    out = tmp_path / "bench"
    code = main(["bench", *tiny_args, "--methods", "full", "rc", "fastervlm", "--budgets", "adaptive", "8",
                 "--n", "4", "--out", str(out)])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["budget"]) for r in rows] == [("full", 64), ("rc", "adaptive"), ("rc", 8),
                                                          ("fastervlm", 8)]
    assert all(r["n"] == 4 and {"accuracy", "mean_tokens", "evidence_recall", "evidence_kept", "seconds"} <= set(r)
               for r in rows)
    full, _, rc8, fastervlm8 = rows
    assert (full["mean_tokens"], full["evidence_recall"], full["evidence_kept"]) == (64, 1.0, 1.0)
    assert fastervlm8["mean_tokens"] == 8 and fastervlm8["evidence_recall"] == fastervlm8["evidence_kept"]
    assert rc8["mean_tokens"] <= 8
    assert (out / "results.csv").exists() and (out / "accuracy_vs_tokens.png").exists()
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 2 + len(rows) and table[0].startswith("| method | budget | n | mean_tokens | accuracy |")
    low, high = rc8["ci"]["accuracy"]
    assert low <= rc8["accuracy"] <= high
    assert table[4].startswith(f"| rc | 8 | 4 | {rc8['mean_tokens']:.3f} | {rc8['accuracy']:.3f} [{low:.2f}, {high:.2f}] |")
    assert all(r["share_of_full"] == r["accuracy"] / full["accuracy"] for r in rows) if full["accuracy"] else True
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert "accuracy_ci_low" in header and "ci" not in header


def test_bench_refuses_bad_numbers_before_loading(tmp_path, capsys):
    for args in (["--n", "0"], ["--budgets", "64/0"], ["--budgets", "-3"], ["--methods", "nope"]):
        with pytest.raises(SystemExit) if args[0] == "--methods" else nullcontext():
            code = main(["bench", "--model", str(tmp_path / "missing"), *args, "--out", str(tmp_path / "o")])
            assert code == 2
    assert "budget '64/0'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_answer_on_a_photo_says_the_closed_vocabulary_model_cannot_answer(tmp_path, tiny_args, tiny_images, capsys):
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.fromarray(tiny_images[0]).save(image)
    assert main(["answer", "--image", str(image), "--question", "what animal is this ?", *tiny_args]) == 0
    printed = capsys.readouterr().out
    rc_line = next(line for line in printed.splitlines() if line.strip().startswith("rc"))
    assert "(not an answer; the model said" in rc_line
    assert "ShapesWorld scenes only" in printed and "“animal”" in printed and "hf download" in printed


def test_print_record_shows_answers_as_answers_without_caveats(capsys):
    from rclib.cli import print_record

    record = {"question": "what color is the circle ?", "method": "rc", "answer": "red", "answer_full": "red",
              "answer_truth": "red", "n_input_tokens": 576, "n_visual": 30, "n_text": 5, "n_merged": 9,
              "n_output_tokens": 44, "seconds": {"compress": 0.01}, "caveats": []}
    print_record(record)
    assert capsys.readouterr().out.splitlines() == [
        "Q: what color is the circle ?", "   all tokens : red",
        "   rc         : red    [576 -> 30 visual / 5 text / 9 merged -> 44]  (compress 0.010s)", "   truth      : red"]


def test_a_demo_says_each_caveat_once(capsys):
    from rclib.cli import print_record

    record = {"question": "what is in the cup?", "method": "rc", "answer": "red", "n_input_tokens": 576,
              "n_visual": 30, "n_text": 5, "n_merged": 9, "n_output_tokens": 44, "seconds": {"compress": 0.01},
              "caveats": ["photo caveat"]}
    said = set()
    print_record(record, said)
    print_record({**record, "caveats": ["photo caveat", "unknown word “cup”"]}, said)
    printed = capsys.readouterr().out
    assert printed.count("photo caveat") == 1 and printed.count("real answers need") == 1
    assert "unknown word “cup”" in printed and "as said above" in printed
