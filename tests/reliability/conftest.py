"""Shared by the reliability tests: a PNG that only claims its size (the shape of a decompression bomb), the
command line's one-line errors, a guard that fails a test if a model loads."""
import struct
import time
import zlib

import pytest
from PIL import Image

import rclib.models
from rclib.cli import main


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


@pytest.fixture
def claimed_png(tmp_path):
    """Write a header-only PNG of the given size to tmp_path / name; returns its path."""
    def write(name: str, width: int, height: int):
        path = tmp_path / name
        path.write_bytes(png_header_only(width, height))
        return path
    return write


@pytest.fixture
def tiny_args(tiny_llava_dir, tiny_clip_dir):
    return ["--model", str(tiny_llava_dir), "--text-encoder", str(tiny_clip_dir)]


@pytest.fixture
def image(tmp_path, tiny_images):
    path = tmp_path / "image.png"
    Image.fromarray(tiny_images[0]).save(path)
    return str(path)


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the command gets as far as loading a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(rclib.models, "load", refuse)


@pytest.fixture
def error_of(capsys):
    """Run the CLI on argv; it must exit with 2 and print exactly one line, which is returned."""
    def run(argv) -> str:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, f"expected one line, got:\n{err}"
        assert lines[0].startswith(f"rclib {argv[0]}: error: ")
        return lines[0]
    return run


@pytest.fixture
def fast(no_model_load, error_of):
    """error_of that also requires the refusal within 5 s, before any model loads."""
    def run(argv):
        started = time.monotonic()
        line = error_of(argv)
        assert time.monotonic() - started < 5, line
        return line
    return run
