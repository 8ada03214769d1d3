"""Tiny local copies of two benchmark datasets in their hub layouts, as ``rclib eval --fetch`` leaves them:
``<data>/lmms-lab-encoder/POPE`` (one default config, split inferred from the file name) and
``<data>/lmms-lab-encoder/ScienceQA`` (named configs declared in the dataset card)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SQA_CARD = """---
configs:
- config_name: ScienceQA-IMG
  data_files:
  - split: test
    path: ScienceQA-IMG/test-*
---
"""


def image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8))


def write_parquet(rows: list[dict], path: Path) -> None:
    """Rows saved as a parquet file by ``datasets`` (its Image feature in the schema, as on the hub)."""
    from datasets import Dataset

    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(rows).to_parquet(str(path))


def build(data: Path, n: int = 4) -> Path:
    """The two copies under ``data``; returns ``data``."""
    write_parquet([{"question_id": str(i), "question": "is there a red circle in the image?",
                    "answer": ["yes", "no"][i % 2], "image": image(i), "category": "random"} for i in range(n)],
                  data / "lmms-lab-encoder" / "POPE" / "data" / "test-00000-of-00001.parquet")
    sqa = data / "lmms-lab-encoder" / "ScienceQA"
    write_parquet([{"image": image(10 + i), "question": "which shape is this?", "choices": ["circle", "square"],
                    "answer": i % 2, "hint": "", "task": "closed choice", "grade": "grade1",
                    "subject": "natural science", "topic": "shapes", "category": "shapes", "skill": "shapes",
                    "lecture": "", "solution": ""} for i in range(n)],
                  sqa / "ScienceQA-IMG" / "test-00000-of-00001.parquet")
    (sqa / "README.md").write_text(SQA_CARD)
    return data
