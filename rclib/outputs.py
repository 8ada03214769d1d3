"""Writing outputs so that nothing half-written is ever seen: atomic files, all-or-nothing folders, JSON without NaN.

- :func:`write_json` / :func:`atomic_file`: a file is written beside its target under a temporary
  name and renamed over it, so a reader sees the previous file or the new one, never a part.
- :func:`output_folder`: the files of one output folder (an answered example, a benchmark) are
  written into a temporary folder beside the target, which then replaces the target as a whole.
  An interrupt leaves the previous complete folder (or none); a lock makes a second writer of the
  same folder fail at once instead of mixing files. rclib replaces only folders it wrote (they hold
  ``MARKER``) or empty ones, never a folder of someone else's files.
- :func:`to_json`: NaN and infinities become ``null`` (most JSON readers reject NaN).

The lock is ``fcntl.flock`` (POSIX): it ends with the process, so a killed run leaves no stale lock.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

MARKER = ".rclib-output"  # in every folder output_folder writes: the next run may replace that folder
MARKER_TEXT = "Written by rclib. The next rclib run writing here replaces this folder as a whole.\n"


class OutputBusy(ValueError):
    """Another process is writing the same output folder now."""


def json_safe(value):
    """``value`` with every non-finite float (NaN, inf) replaced by None and tuples made lists, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def to_json(value, indent: int = 2) -> str:
    """JSON text of ``value`` with NaN and infinities as null; anything else not JSON is a ValueError."""
    try:
        return json.dumps(json_safe(value), indent=indent, allow_nan=False)
    except TypeError as error:
        raise ValueError(f"cannot write {type(value).__name__} as JSON: {error}") from error


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_options):
    """Open a temporary file beside ``path`` for writing; on success it is flushed to disk and renamed to
    ``path`` (replacing it at once), on any error removed. Yields the open file."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_options) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, value) -> None:
    """Write ``value`` as JSON (NaN as null) to ``path`` atomically."""
    text = to_json(value)
    with atomic_file(path, encoding="utf-8") as file:
        file.write(text + "\n")


def nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest existing ancestor."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def probe(folder: Path, target: Path) -> None:
    """Raise a ValueError unless this process can create a file in the existing ``folder`` (to write ``target``)."""
    if not folder.is_dir():
        raise ValueError(f"cannot write {str(target)!r}: {str(folder)!r} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"cannot write {str(target)!r}: {str(folder)!r} is not writable ({error.strerror}); pass "
                         "another output path") from error


def check_writable(target: str | Path) -> Path:
    """Raise a ValueError saying what to do unless a folder can be written at ``target``: it is no file, and it
    (or its closest existing ancestor, where it would be made) is a folder this process can write in."""
    target = Path(target).absolute()
    if target.exists() and not target.is_dir():
        raise ValueError(f"output {str(target)!r} is a file, not a folder: pass a folder path")
    probe(nearest_existing(target), target)
    return target


def check_output_folder(target: str | Path) -> Path:
    """:func:`check_writable`, and rclib may replace ``target`` as a whole: it is absent, empty or an earlier
    rclib output, and the folder beside it (where the new one is written first) is writable."""
    target = check_writable(target)
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
        raise ValueError(f"output folder {str(target)!r} holds files rclib did not write: pass a new or empty folder "
                         "(rclib replaces its output folder as a whole)")
    probe(nearest_existing(target.parent), target)
    return target


@contextmanager
def folder_lock(target: Path):
    """Hold the lock of output folder ``target`` (a lock file beside it); OutputBusy if another process does."""
    path = target.parent / f".{target.name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    busy = OutputBusy(f"another process is writing {str(target)!r} now (it holds {str(path)!r}): wait for it to "
                      "finish or pass another output folder")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder finished and removed the lock file between our open and our flock
            raise busy
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # while still locked: a later writer makes a fresh lock file
    finally:
        os.close(fd)


def recover(target: Path) -> None:
    """Under the lock: put back the previous output if a run died between its two renames, then remove
    what interrupted runs left (temporary and replaced folders)."""
    parent, name = target.parent, target.name
    previous = sorted(parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
    if previous and not target.exists():
        os.rename(previous.pop(), target)
    for leftover in [*previous, *parent.glob(f".{name}.tmp-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def sync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` to disk, so the rename never publishes a folder of empty files."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@contextmanager
def output_folder(target: str | Path):
    """Write an output folder all or nothing. Yields a temporary folder to write every file into; when the
    block ends without error it replaces ``target`` (the previous output until then), else it is removed.

    ValueError before anything is written if ``target`` may not be written (see
    :func:`check_output_folder`); :class:`OutputBusy` if another process writes it now.
    """
    target = check_output_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(target):
        check_output_folder(target)  # again, now that no one else can change it
        recover(target)
        temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        old = None
        try:
            yield temp
            (temp / MARKER).write_text(MARKER_TEXT)
            sync_tree(temp)
            if target.exists():
                old = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
                os.rename(target, old)
            os.rename(temp, target)
        except BaseException:
            if old is not None and not target.exists():
                os.rename(old, target)  # interrupted between the two renames: the previous output returns
                old = None
            shutil.rmtree(temp, ignore_errors=True)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
