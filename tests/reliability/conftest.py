"""Shared by the reliability tests: a PNG that only claims its size (the shape of a decompression bomb)."""
import struct
import zlib

import pytest


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
