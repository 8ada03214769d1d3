"""No input takes gigabytes, hangs or crashes: sizes checked from the header, pipes read once
and never waited on forever, hub calls time out, numbers range-checked, option clashes refused before loading."""
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from rclib.eval.table import table_rows
from rclib.images import ImageError, ImageNote, open_image, read_image
from rclib.questions import check_question_text


# A tiny file can claim a huge image (a 1 x 50,000 PNG of 277 bytes takes 32 s and 4.2 GB to decode):
# such sizes are refused from the header.
@pytest.mark.parametrize("width, height, message", [
    (1, 50_000, "over 6,400 pixels on a side"), (1, 100_000, "over 6,400 pixels on a side"),
    (30, 3_000, "more than 20 times longer than wide"), (0, 10, "it has no pixels")])
def test_sizes_that_would_take_gigabytes_are_refused_from_the_header(fast, claimed_png, tiny_args, width, height,
                                                                     message):
    path = claimed_png("bomb.png", width, height) if width else claimed_png("empty.png", 1, 1)
    if not width:
        with pytest.raises(ImageError, match=message):
            read_image(Image.new("RGB", (0, 10)))
        return
    assert message in fast(["answer", "--image", str(path), "--question", "what colour ?", *tiny_args])
    with pytest.raises(ImageError, match=message):
        read_image(Image.new("L", (width, height)))


# A pipe as --image (a FIFO, `<(cat x.jpg)`) is read once, and one that stays silent fails in seconds.
def test_a_pipe_is_read_once_and_a_silent_one_fails_in_seconds(tmp_path, image, fast, tiny_args):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "is a pipe and nothing arrived in 3 s" in fast(["answer", "--image", str(fifo), "--question", "what ?",
                                                            *tiny_args])
    data = open(image, "rb").read()
    writer = threading.Thread(target=lambda: fifo.write_bytes(data))
    writer.start()
    read = open_image(fifo)
    writer.join()
    assert np.array_equal(np.asarray(read.image), np.asarray(Image.open(image).convert("RGB")))


def test_answer_reads_the_image_once(monkeypatch, image, tiny_args, capsys):
    import rclib.images
    from rclib.cli import main

    calls = []
    real = rclib.images.open_image
    monkeypatch.setattr(rclib.images, "open_image", lambda path: calls.append(path) or real(path))
    assert main(["answer", "--image", image, "--question", "what colour is the circle ?", *tiny_args]) == 0
    assert calls == [image]


# A hub that accepts connections and never answers times out instead of hanging.
def test_a_silent_hub_times_out(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # connections are accepted by the kernel and never answered
    script = ("import rclib.models.loading as loading\nloading.NETWORK_TIMEOUT = 1.0\n"
              "loading.load('someone/model', text_encoder='shapes-clip')")
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}", "HF_HUB_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    server.close()
    assert done.returncode == 1 and "is not available" in done.stderr and "Timeout" in done.stderr, done.stderr[-500:]


# Huge numbers (`bench --n 1e11`, `speed --threads 100000`, a budget past int64) are range-checked.
@pytest.mark.parametrize("argv, message", [
    (["bench", "--n", "100000000000"], "--n must be from 1 to 20,000, got 100000000000"),
    (["speed", "--threads", "100000"], f"--threads must be from 1 to {os.cpu_count():,}, got 100000"),
    (["answer", "--image", "x.png", "--question", "q", "--budget", str(10**23)], "--budget must be from 1 to 100,000"),
    (["bench", "--budgets", "1e23/1"], "is over 100,000 tokens"),
    (["bench", "--seed", str(2**40)], "--seed must be from 0 to 4,294,967,295"),
])
def test_numbers_are_bounded(fast, argv, message, tmp_path):
    assert message in fast([*argv, "--out", str(tmp_path / "out")])


# Option clashes that would run silently wrong are refused before loading.
@pytest.mark.parametrize("argv, message", [
    (["eval", "--model-args", "method=fastervlm"], "--model-args may not set method: each cell sets it; use --methods"),
    (["eval", "--model-args", "budget=10"], "may not set budget"),
    (["eval", "--model-args", "text_encoder"], "'text_encoder' is not key=value"),
    (["answer", "--method", "full", "--budget", "10"], "--method full uses every token: drop --budget 10"),
    (["bench", "--methods", "rc", "rc", "--budgets", "64"], "--methods lists rc more than once"),
    (["bench", "--methods", "rc", "--budgets", "64", "64"], "--budgets lists 64 more than once"),
    (["bench", "--methods", "fastervlm", "--budgets", "adaptive"], "fastervlm take a fixed budget, not 'adaptive'"),
    (["bench", "--families", "colour"], "unknown question families ['colour']"),
    (["answer", "--method", "fastervlm", "--preset", "released"], "--preset is an option of rc, not of fastervlm"),
    (["answer", "--out", ""], "the output path is empty"),
    (["bench", "--out", ""], "the output path is empty"),
])
def test_option_clashes_are_refused_before_loading(fast, image, argv, message, tmp_path):
    if argv[0] == "answer":
        argv = [*argv, "--image", image, "--question", "what colour ?"]
    elif argv[0] == "eval":
        argv = [*argv, "--tasks", "shapesworld", "--out", str(tmp_path / "eval")]
    assert message in fast(argv)


# A question of zero-width spaces is empty; a float image in 0..1 is scaled, not read as black.
def test_invisible_questions_and_float_images():
    with pytest.raises(ValueError, match="the question is empty"):
        check_question_text("\u200b\u200b\u2060")
    with pytest.warns(ImageNote, match="float pixels within 0..1 read as 0..1"):
        pixels = np.asarray(read_image(np.full((8, 8, 3), 0.5, dtype=np.float32)))
    assert (pixels == 128).all(), "0..1 floats are read as 0..1, not as a black 0..255 image"
    assert (np.asarray(read_image(np.full((3, 8, 8), 200.0, dtype=np.float32))) == 200).all()


# Bad images given to the API are ValueErrors that name the problem, not raw IndexError / TypeError / PIL errors.
@pytest.mark.parametrize("image, message", [
    (None, "an image must be a path, a PIL image, a numpy array or a tensor, got NoneType"),
    (Image.new("La", (4, 4)), "cannot convert a PIL image of mode 'La' to RGB"),
    (np.zeros((5, 5, 7)), r"must be \[H, W, C\] or \[C, H, W\] with 1, 3 or 4 channels"),
    (np.full((4, 4, 3), np.nan), "NaN or infinite pixels"),
])
def test_api_images_fail_with_the_fix(image, message):
    with pytest.raises(ImageError, match=message):
        read_image(image)


# `rclib table` skips a damaged *_results.json, naming it.
def test_a_damaged_results_file_is_skipped_by_name(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x_results.json").write_text("{")
    (tmp_path / "a" / "y_results.json").write_text('{"results": {}}')
    assert table_rows([tmp_path]) == []
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("skipped '") and "_results.json'" in line for line in err)
    assert "not an lmms-eval results file" in err[1]
