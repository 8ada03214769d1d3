"""A manifest binds a LLaVA checkpoint folder to the CLIP text tower folder it was trained with.

A LLaVA carries only CLIP's vision tower; its text score needs the text tower of the same CLIP. When
both are saved by one run (``rclib train-shapes``), the same ``MANIFEST`` is written into both folders:
one id for the pair and the SHA-256 of every file (weights, configs, tokenizers) of each. :func:`check_pair`
runs at load, before any weights are read, and refuses a pair whose manifests differ, a folder whose files
changed since, or a folder with a manifest beside one without (one of them is from another run).
Folders without any manifest (hub checkpoints, folders saved by hand) are taken as they are.

To bind two folders saved by other means: ``write_manifest("data/models")`` (or ``python -m
rclib.models.manifest data/models``) binds ``data/models/shapes-llava`` and ``data/models/shapes-clip``.
"""
from __future__ import annotations

import hashlib
import json
import sys
import uuid
from pathlib import Path

MANIFEST = "rclib-manifest.json"  # in both folders of a pair
LLAVA, TEXT_TOWER = "shapes-llava", "shapes-clip"  # the folders train-shapes writes side by side


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file in ``folder`` but the manifest, by name."""
    found = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST):
        digest = hashlib.sha256()
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        found[path.name] = digest.hexdigest()
    return found


def write_manifest(out_dir: str | Path, llava: str = LLAVA, text_tower: str = TEXT_TOWER) -> dict:
    """Bind ``out_dir/llava`` and ``out_dir/text_tower``: the same manifest (a new pair id, each folder's file
    digests) is written into both. Returns it."""
    out_dir = Path(out_dir)
    folders = {"llava": out_dir / llava, "text_tower": out_dir / text_tower}
    for folder in folders.values():
        if not folder.is_dir():
            raise ValueError(f"no folder {str(folder)!r}: pass the folder holding {llava}/ and {text_tower}/")
    manifest = {"pair": uuid.uuid4().hex, **{role: digests(folder) for role, folder in folders.items()}}
    for folder in folders.values():
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(folder: Path | None) -> dict | None:
    """``folder``'s manifest, None without one; a ValueError names a damaged one."""
    path = None if folder is None else Path(folder) / MANIFEST
    if path is None or not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not all(isinstance(manifest.get(key), want) for key, want in
                   (("pair", str), ("llava", dict), ("text_tower", dict))):
            raise ValueError("it lacks pair, llava or text_tower")
    except (UnicodeDecodeError, ValueError, AttributeError) as error:
        raise ValueError(f"{str(path)!r} is damaged ({error}): save the models again, or bind them anew with "
                         "rclib.models.manifest.write_manifest") from None
    return manifest


def check_pair(llava_folder: Path, text_folder: Path | None) -> None:
    """Raise a ValueError naming the folders unless the LLaVA and text tower folders are a bound pair whose files
    are unchanged, or neither has a manifest. text_folder: None for a text tower that is no local folder."""
    manifests = {"llava": read_manifest(llava_folder), "text_tower": read_manifest(text_folder)}
    folders = {"llava": llava_folder, "text_tower": text_folder}
    fix = "pass the text tower saved with this LLaVA, or save both again (rclib train-shapes)"
    if manifests["llava"] is None and manifests["text_tower"] is None:
        return
    if manifests["llava"] is None or manifests["text_tower"] is None:
        bound = "llava" if manifests["llava"] else "text_tower"
        other = "text_tower" if bound == "llava" else "llava"
        raise ValueError(f"{str(folders[bound])!r} was saved as a pair with another "
                         f"{'text tower' if other == 'text_tower' else 'LLaVA'} than {str(folders[other])!r} (only "
                         f"one has {MANIFEST}): {fix}")
    if manifests["llava"]["pair"] != manifests["text_tower"]["pair"]:
        raise ValueError(f"{str(llava_folder)!r} and {str(text_folder)!r} were saved by different runs (their "
                         f"{MANIFEST} differ): {fix}")
    for role, folder in folders.items():
        listed, found = manifests["llava"][role], digests(folder)
        changed = sorted(name for name in listed.keys() | found.keys() if listed.get(name) != found.get(name))
        if changed:
            raise ValueError(f"{', '.join(changed)} in {str(folder)!r} differ from what {MANIFEST} lists (changed, "
                             f"missing or added since the pair was saved): {fix}")


if __name__ == "__main__":
    print(json.dumps(write_manifest(sys.argv[1] if len(sys.argv) > 1 else "data/models"), indent=2))
