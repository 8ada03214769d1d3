"""ShapesWorld as lmms-eval tasks: the group ``shapesworld``, one subtask ``shapesworld_<family>`` per family.

The questions are rclib bench's, ``sample_vqa(seed, n)`` with bench's default seed and n, saved with
``datasets`` (one split per family, in bench order) and read by lmms-eval with ``load_from_disk``. Scoring
regenerates the samples from (seed, n) and scores with the world's own rule, the one ``rclib bench`` uses,
so both give the same numbers on the same questions. The group's accuracy is the subtasks' accuracies
weighted by their sizes: the accuracy over all questions.

:func:`tasks_dir` writes the dataset and the task files (once per seed and n) and returns the folder to
pass to lmms-eval's ``--include_path``; ``rclib eval --tasks-dir`` prints it.
"""
from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from rclib.bench import BenchConfig

GROUP = "shapesworld"
ANSWER_TOKENS = 4  # new tokens per answer, as rclib bench generates them


def cache_root() -> Path:
    """Where generated data lives: $RCLIB_CACHE, else ~/.cache/rclib."""
    return Path(os.environ.get("RCLIB_CACHE") or Path.home() / ".cache" / "rclib")


def family_of(sample) -> str:
    """The question family of a sample (today's world: the question type)."""
    return sample.question_type


def family_metrics(samples: list, answers: list[str]) -> dict[str, float]:
    """Accuracy overall and per family, by rclib bench's rule (the answer, stripped and lower-cased, equals the truth)."""
    correct = np.array([answer.strip().lower() == sample.answer for sample, answer in zip(samples, answers)])
    families = np.array([family_of(sample) for sample in samples])
    return {"accuracy": float(correct.mean()),
            **{f"accuracy_{f}": float(correct[families == f].mean()) for f in sorted(set(families))}}


@lru_cache(maxsize=1)
def bench_samples(seed: int, n: int) -> list:
    """rclib bench's questions: ``sample_vqa(seed, n)``."""
    from rclib.shapes.world import sample_vqa

    return sample_vqa(seed, n)


def build_dataset(folder: Path, seed: int, n: int) -> None:
    """Save bench's questions as a DatasetDict with one split per family (bench order within each)."""
    from datasets import Dataset, DatasetDict, Features, Image, Value
    from PIL import Image as PILImage

    features = Features({"image": Image(), "question": Value("string"), "answer": Value("string"),
                         "seed": Value("int64"), "n": Value("int64"), "index": Value("int64")})
    rows = defaultdict(list)
    for index, sample in enumerate(bench_samples(seed, n)):
        rows[family_of(sample)].append({"image": PILImage.fromarray(sample.image), "question": sample.question,
                                        "answer": sample.answer, "seed": seed, "n": n, "index": index})
    splits = DatasetDict({family: Dataset.from_list(rows[family], features=features) for family in sorted(rows)})
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:  # complete or absent, never half-written
        splits.save_to_disk(Path(tmp) / "data")
        (Path(tmp) / "data").rename(folder)


def subtask_yaml(family: str, data: Path) -> str:
    """lmms-eval's task file for one family."""
    functions = "rclib.eval.shapesworld"
    return f"""\
task: {GROUP}_{family}
dataset_path: {data}
dataset_kwargs:
  load_from_disk: true
test_split: {family}
output_type: generate_until
doc_to_visual: !function {functions}.doc_to_visual
doc_to_text: !function {functions}.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {ANSWER_TOKENS}
  temperature: 0
  do_sample: false
process_results: !function {functions}.process_results
metric_list:
  - metric: accuracy
    aggregation: !function {functions}.aggregate
    higher_is_better: true
metadata:
  version: 1.0
"""


def group_yaml(families: list[str]) -> str:
    """lmms-eval's group file: accuracy over all questions (subtasks weighted by size)."""
    tasks = "".join(f"  - {GROUP}_{family}\n" for family in families)
    return f"""\
group: {GROUP}
task:
{tasks}aggregate_metric_list:
  - metric: accuracy
    aggregation: mean
    weight_by_size: true
metadata:
  version: 1.0
"""


def tasks_dir(root: Path | None = None, seed: int = BenchConfig.seed, n: int = BenchConfig.n) -> Path:
    """The folder of ShapesWorld task files for lmms-eval's ``--include_path``, data generated if missing.

    Layout: ``<root>/shapesworld-seed<seed>-n<n>/data`` (the dataset) and ``.../tasks`` (the task files).
    """
    if n < 1:
        raise ValueError(f"ShapesWorld needs at least one question, got n={n}")
    base = (Path(root) if root else cache_root()).resolve() / f"shapesworld-seed{seed}-n{n}"
    data, folder = base / "data", base / "tasks"
    if not data.is_dir():
        build_dataset(data, seed, n)
    families = sorted(path.name for path in data.iterdir() if path.is_dir())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{GROUP}.yaml").write_text(group_yaml(families))
    for family in families:
        (folder / f"{GROUP}_{family}.yaml").write_text(subtask_yaml(family, data))
    return folder


# The functions the task files name.
def doc_to_visual(doc: dict) -> list:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict) -> str:
    return doc["question"]


def process_results(doc: dict, results: list[str]) -> dict:
    """What :func:`aggregate` needs to find the sample again: (seed, n, index) and the answer."""
    return {"accuracy": (doc["seed"], doc["n"], doc["index"], results[0])}


def aggregate(items: list[tuple]) -> float:
    """Accuracy of the answers to these samples, by the world's scoring."""
    seed, n = items[0][0], items[0][1]
    samples = bench_samples(seed, n)
    return family_metrics([samples[index] for _, _, index, _ in items], [answer for *_, answer in items])["accuracy"]
