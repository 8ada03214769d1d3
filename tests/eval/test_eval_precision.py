"""float16: the lmms-eval model answers a batch as it answers each question alone (the tiny LLaVA, CPU)."""
from __future__ import annotations

import pytest

from rclib.eval.model import RclibModel

from test_eval_model import requests


@pytest.mark.parametrize("method, budget", [("full", "adaptive"), ("rc", "adaptive"), ("fastv", "8")])
def test_float16_batches_answer_as_single_questions(tiny_llava_dir, tiny_clip_dir, tiny_images, method, budget):
    args = {"pretrained": str(tiny_llava_dir), "text_encoder": str(tiny_clip_dir), "device": "cpu",
            "dtype": "float16", "method": method, "budget": budget}
    batched, single = RclibModel(**args, batch_size=4), RclibModel(**args, batch_size=1)
    made, task_dict = requests(tiny_images[:4], gen_kwargs={"max_new_tokens": 4, "temperature": 0})
    batched.task_dict = single.task_dict = task_dict
    assert batched.generate_until(made) == single.generate_until(made)
    assert batched.visual_tokens == single.visual_tokens  # rc: each question its own K, batched or not
