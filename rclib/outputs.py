"""Writing outputs so that nothing half-written is ever seen: atomic files, all-or-nothing folders, JSON without NaN.

- :func:`write_json` / :func:`atomic_file`: a file is written beside its target under a temporary
  name and renamed over it, so a reader sees the previous file or the new one, never a part.
- :func:`output_folder`: the files of one output folder (an answered example, a benchmark) are
  written into a temporary folder beside the target, which then replaces the target as a whole.
  An interrupt leaves the previous complete folder (or none); a lock makes a second writer of the
  same folder fail at once instead of mixing files. rclib replaces only what it wrote: ``MARKER``
  lists the command and every file of the folder; a folder holding anything else, or the output of
  another command, is refused with the names of what is in the way.
- Paths are followed: an output path that is a symbolic link writes into the folder it points to.
  Files and folders get the permissions the umask gives (as ``open`` and ``mkdir`` do).
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

MARKER = ".rclib-output"  # in every folder output_folder writes: the command and the files it wrote there
MARKER_NOTE = "Written by rclib. The next rclib run of the same command replaces these files as a whole."
SHOWN = 5  # entries an error names before "..."


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


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow(path: str | Path) -> Path:
    """``path`` made absolute, a symbolic link (also one in its parents) replaced by what it points to."""
    return Path(path).expanduser().resolve()


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_options):
    """Open a temporary file beside ``path`` for writing; on success it is flushed to disk and renamed to
    ``path`` (replacing it at once), on any error removed. Yields the open file. A link at ``path`` is
    followed: the file it points to is replaced; the new file's permissions come from the umask."""
    path = follow(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())
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


def write_report(stem: str | Path, results: dict, markdown: str) -> tuple[Path, Path]:
    """A benchmark's numbers (``stem.json``) and their Markdown (``stem.md``), each written atomically; the folder is
    made if missing."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")
    write_json(json_path, results)
    with atomic_file(md_path, encoding="utf-8") as file:
        file.write(markdown)
    return json_path, md_path


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
    (or its closest existing ancestor, where it would be made) is a folder this process can write in.
    Returns the folder, links followed."""
    if not str(target).strip():
        raise ValueError("the output path is empty: pass a folder path")
    target = follow(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"output {str(target)!r} is a file, not a folder: pass a folder path")
    probe(nearest_existing(target), target)
    return target


def entries(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` but the marker, as sorted relative POSIX paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.name != MARKER)


def read_marker(folder: Path) -> dict:
    """What ``folder``'s marker says: {"command": the rclib command or None, "files": what it wrote}. Without a
    marker, or with one of an older rclib (plain text) or a damaged one, rclib claims no file there."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        marker = {}
    marker = marker if isinstance(marker, dict) else {}
    files = marker.get("files")
    return {"command": marker.get("command"), "files": files if isinstance(files, list) else []}


def named(paths: list[str]) -> str:
    return ", ".join(paths[:SHOWN]) + (f", ... ({len(paths)} in all)" if len(paths) > SHOWN else "")


def check_output_folder(target: str | Path, command: str | None = None) -> Path:
    """:func:`check_writable`, and rclib may replace ``target`` as a whole: it is absent, empty, or holds only
    what an earlier run of ``command`` wrote there (its marker lists the files); the folder beside it (where the
    new one is written first) is writable. Returns the folder, links followed."""
    target = check_writable(target)
    marker = read_marker(target)
    if marker["command"] not in (None, command):
        raise ValueError(f"output folder {str(target)!r} holds the output of `rclib {marker['command']}`: pass "
                         f"another folder (or move that output away)")
    foreign = [p for p in entries(target) if p not in set(marker["files"])] if target.is_dir() else []
    if foreign:
        raise ValueError(f"output folder {str(target)!r} holds what rclib did not write ({named(foreign)}): pass "
                         "a new or empty folder, or move those away (rclib replaces its output folder as a whole)")
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
def output_folder(target: str | Path, command: str | None = None):
    """Write an output folder all or nothing. Yields a temporary folder to write every file into; when the
    block ends without error it replaces ``target`` (the previous output until then), else it is removed.
    command: the rclib command writing (its marker says so; another command's output is never replaced).

    ValueError before anything is written if ``target`` may not be written (see
    :func:`check_output_folder`); :class:`OutputBusy` if another process writes it now.
    """
    target = check_output_folder(target, command)
    target.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(target):
        check_output_folder(target, command)  # again, now that no one else can change it
        recover(target)
        temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        temp.chmod(0o777 & ~current_umask())
        old = None
        try:
            yield temp
            (temp / MARKER).write_text(to_json({"note": MARKER_NOTE, "command": command, "files": entries(temp)}))
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
