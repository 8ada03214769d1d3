"""``rclib eval --fetch``: download the datasets of the tasks into the data folder that ``--data`` reads offline.

Each dataset goes to ``<data>/<hub id>/`` as the hub stores it (``hf download --repo-type dataset --local-dir``),
restricted to the files of the task's config and split (read from the repo's README.md ``configs``) and that
README. The plan (repos, files, sizes) is printed before anything is downloaded.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from rclib.eval.taskdata import TaskData

README = "README.md"


@dataclass(frozen=True)
class Download:
    repo: str
    files: tuple[str, ...]  # paths in the repo
    size: int  # bytes


def readme_configs(text: str) -> list[dict]:
    """The ``configs`` of a dataset card's YAML header (empty without one)."""
    import yaml

    if not text.startswith("---"):
        return []
    header = text.split("---", 2)[1]
    return (yaml.safe_load(header) or {}).get("configs") or []


def data_patterns(configs: list[dict], item: TaskData) -> list[str] | None:
    """The file patterns of the item's config and split; None: the card does not say (take the whole repo)."""
    for config in configs:
        if config.get("config_name", "default") == (item.config or "default"):
            files = config.get("data_files") or []
            files = [files] if isinstance(files, (str, dict)) else files
            entries = [f if isinstance(f, dict) else {"split": None, "path": f} for f in files]
            chosen = [e for e in entries if e.get("split") == item.split] or entries
            return [p for e in chosen for p in ([e["path"]] if isinstance(e["path"], str) else e["path"])]
    return None


def plan(items: list[TaskData], api) -> list[Download]:
    """What to download for the datasets (one Download per repo); ``api``: a huggingface_hub.HfApi."""
    from huggingface_hub import hf_hub_download

    by_repo: dict[str, set[str]] = {}
    sizes: dict[str, dict[str, int]] = {}
    for item in items:
        info = api.dataset_info(item.repo, files_metadata=True)
        sizes[item.repo] = {s.rfilename: s.size or 0 for s in info.siblings}
        card = Path(hf_hub_download(item.repo, README, repo_type="dataset")).read_text(encoding="utf-8") \
            if README in sizes[item.repo] else ""
        patterns = data_patterns(readme_configs(card), item)
        chosen = {f for f in sizes[item.repo] if patterns is None or f == README
                  or any(fnmatch.fnmatch(f, p) for p in patterns)}
        by_repo.setdefault(item.repo, set()).update(chosen)
    return [Download(repo, tuple(sorted(files)), sum(sizes[repo][f] for f in files))
            for repo, files in sorted(by_repo.items())]


def describe(downloads: list[Download], data_dir: Path) -> str:
    lines = [f"  {d.repo}: {len(d.files)} files, {d.size / 1e9:.2f} GB -> {data_dir / d.repo}" for d in downloads]
    total = sum(d.size for d in downloads) / 1e9
    return "\n".join(["rclib eval --fetch will download:", *lines, f"  in all {total:.2f} GB"])


def fetch(downloads: list[Download], data_dir: Path) -> None:
    """Download the planned files into ``<data_dir>/<repo>`` (resumes what an earlier fetch left)."""
    from huggingface_hub import snapshot_download

    for d in downloads:
        snapshot_download(d.repo, repo_type="dataset", allow_patterns=list(d.files), local_dir=data_dir / d.repo)
