"""ShapesWorld as lmms-eval tasks: the group ``shapesworld``, one subtask ``shapesworld_<family>`` per family.

The questions are rclib bench's, ``sample_vqa(seed, n)`` with bench's default seed and n, saved with
``datasets`` (one split per family, in bench order) and read by lmms-eval with ``load_from_disk``. Scoring
regenerates the samples from (seed, n) and calls the world's scoring, ``rclib.shapes.metrics.family_metrics``,
as ``rclib bench`` does, so both give the same numbers on the same questions. The group's accuracy is the
subtasks' accuracies weighted by their sizes: the accuracy over all questions.

:func:`tasks_dir` writes the dataset and the task files (once per seed and n) and returns the folder to
pass to lmms-eval's ``--include_path``; ``rclib eval --tasks-dir`` prints it.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from rclib.bench import BenchConfig, run_cells

GROUP = "shapesworld"
ANSWER_TOKENS = inspect.signature(run_cells).parameters["max_new_tokens"].default  # new tokens per answer, as bench


def cache_root() -> Path:
    """Where generated data lives: $RCLIB_CACHE, else ~/.cache/rclib."""
    return Path(os.environ.get("RCLIB_CACHE") or Path.home() / ".cache" / "rclib")


@lru_cache(maxsize=1)
def bench_samples(seed: int, n: int) -> list:
    """rclib bench's questions: ``sample_vqa(seed, n)``, every family."""
    from rclib.shapes.world import sample_vqa

    return sample_vqa(seed, n)


def world_version(seed: int) -> str:
    """A short hash of the stream's first question, image and answer: a changed world gets a new data folder."""
    from rclib.shapes.world import sample_vqa

    first = sample_vqa(seed, 1)[0]
    return hashlib.sha256(first.question.encode() + first.answer.encode() + first.image.tobytes()).hexdigest()[:12]


def metric_names(samples: list) -> list[str]:
    """The metrics the world's scoring gives for one family's samples (accuracy_<family> repeats accuracy)."""
    from rclib.shapes.metrics import family_metrics

    return [name for name in family_metrics(samples, [s.answer for s in samples]) if not name.startswith("accuracy_")]


def build_dataset(folder: Path, seed: int, n: int) -> None:
    """Save bench's questions as a DatasetDict with one split per family (bench order within each)."""
    from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value
    from PIL import Image as PILImage

    features = Features({"image": Image(), "question": Value("string"), "answer": Value("string"),
                         "seed": Value("int64"), "n": Value("int64"), "index": Value("int64"),
                         "metrics": Sequence(Value("string"))})
    by_family = defaultdict(list)
    for index, sample in enumerate(bench_samples(seed, n)):
        by_family[sample.family].append((index, sample))
    splits = {}
    for family, indexed in sorted(by_family.items()):
        metrics = metric_names([sample for _, sample in indexed])
        splits[family] = Dataset.from_list(
            [{"image": PILImage.fromarray(sample.image), "question": sample.question, "answer": sample.answer,
              "seed": seed, "n": n, "index": index, "metrics": metrics} for index, sample in indexed],
            features=features)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:  # complete or absent, never half-written
        DatasetDict(splits).save_to_disk(Path(tmp) / "data")
        (Path(tmp) / "data").rename(folder)


def subtask_yaml(family: str, data: Path, metrics: list[str]) -> str:
    """lmms-eval's task file for one family."""
    functions = "rclib.eval.shapesworld"
    metric_list = "".join(f"""\
  - metric: {metric}
    aggregation: !function {functions}.aggregate
    higher_is_better: {str(metric != "existence_yes_ratio").lower()}
""" for metric in metrics)
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
{metric_list}metadata:
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

    Layout: ``<root>/shapesworld-<world version>-seed<seed>-n<n>/data`` (the dataset) and ``.../tasks`` (the
    task files); see :func:`world_version`.
    """
    if n < 1:
        raise ValueError(f"ShapesWorld needs at least one question, got n={n}")
    base = (Path(root) if root else cache_root()).resolve() / f"shapesworld-{world_version(seed)}-seed{seed}-n{n}"
    data, folder = base / "data", base / "tasks"
    if not data.is_dir():
        build_dataset(data, seed, n)
    from datasets import load_from_disk

    splits = load_from_disk(str(data))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{GROUP}.yaml").write_text(group_yaml(sorted(splits)))
    for family, split in splits.items():
        (folder / f"{GROUP}_{family}.yaml").write_text(subtask_yaml(family, data, split[0]["metrics"]))
    return folder


# The functions the task files name.
def doc_to_visual(doc: dict) -> list:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict) -> str:
    return doc["question"]


def process_results(doc: dict, results: list[str]) -> dict:
    """For each metric of the family, what :func:`aggregate` needs: the metric, (seed, n, index), the answer."""
    return {metric: (metric, doc["seed"], doc["n"], doc["index"], results[0]) for metric in doc["metrics"]}


def aggregate(items: list[tuple]) -> float | None:
    """One metric of the world's scoring over these answers (None where it is undefined, e.g. F1 without a yes)."""
    from rclib.shapes.metrics import family_metrics

    metric, seed, n = items[0][:3]
    samples = bench_samples(seed, n)
    return family_metrics([samples[index] for *_, index, _ in items], [answer for *_, answer in items]).get(metric)
