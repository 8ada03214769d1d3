"""lmms-eval's results files: where they are, and reading one without letting a damaged file stop a command."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def result_files(folders: list[str | Path]) -> list[Path]:
    """Every lmms-eval results file under the folders."""
    files = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder; pass lmms-eval output folders (--output_path)")
        files += sorted(folder.rglob("*_results.json"))
    return files


def read_results(path: Path) -> dict | None:
    """An lmms-eval results file, or None (with one line on stderr naming it and why) if it is damaged."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(results, dict) or not isinstance(results.get("config"), dict) or \
                not isinstance(results.get("results"), dict) or "model" not in results["config"]:
            raise ValueError("no 'config' with a 'model', or no 'results': not an lmms-eval results file")
        return results
    except (OSError, UnicodeDecodeError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        reason = " ".join(str(error).split())
        print(f"skipped {str(path)!r}: {reason}; rerun the cell that wrote it, or move the file away",
              file=sys.stderr)
        return None
