"""The paper's benchmarks as lmms-eval tasks, their headline metrics, and the numbers the authors reported.

lmms-eval reports fractions (0-1) for accuracies; the paper reports percent, and MME in points. A
:class:`Benchmark` names the task, the metric and the factor between the two, so a table built from
lmms-eval result files reads in the paper's units.
"""
from __future__ import annotations

from dataclasses import dataclass

from rclib.eval.shapesworld import GROUP as SHAPESWORLD


@dataclass(frozen=True)
class Benchmark:
    column: str  # the table's column, the paper's name; "A/B" details column A (not in share_of_full)
    task: str  # lmms-eval task or group name
    metric: str  # headline metric, as lmms-eval's results name it (before ",<filter>")
    scale: float = 100.0  # lmms-eval's value times this is in the paper's unit (percent; MME: points, 1)
    note: str = ""  # how the lmms-eval task differs from the paper's setting
    questions: int = 0  # questions of the task (for the time estimate)
    in_paper: bool = True  # a column of the RC paper's table


PAPER_BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("SQA-IMG", "scienceqa_img", "exact_match", questions=2017),
    Benchmark("TextVQA", "textvqa_val", "exact_match", questions=5000),
    Benchmark("MME", "mme", "mme_perception_score", 1.0, "perception score, as the paper", 2374),
    Benchmark("VQAv2", "vqav2_val", "exact_match", note="the paper: test-dev, scored by the EvalAI server "
              "(lmms-eval's vqav2_test writes the submission file); val is scored locally", questions=214354),
    Benchmark("POPE", "pope", "pope_f1_score", note="F1 of the three splits (random, popular, adversarial) "
              "pooled; LLaVA's script scores each split", questions=9000),
    Benchmark("MMB", "mmbench_en_dev", "gpt_eval_score", 1.0, "matches free answers to options with the OpenAI "
              "API (OPENAI_API_KEY); mmbench_en_dev_static matches offline", 4329),
    Benchmark("GQA", "gqa", "exact_match", note="not in the RC paper's table; LLaVA-1.5's usual set",
              questions=12578, in_paper=False),
)
MMB_OFFLINE = Benchmark("MMB", "mmbench_en_dev_static", "gpt_eval_score", 1.0, "MMBench-EN dev, answers matched "
                        "to options by rules, offline (no API key)", 4329)


SHAPESWORLD_BENCHMARK = Benchmark("ShapesWorld", SHAPESWORLD, "accuracy")  # its families are columns of their own
COLUMN_ORDER = tuple(b.column for b in PAPER_BENCHMARKS) + (SHAPESWORLD_BENCHMARK.column,)


def benchmark_for(task: str) -> Benchmark | None:
    """The benchmark of an lmms-eval task (paper benchmarks, ShapesWorld and its families), else None."""
    for benchmark in (*PAPER_BENCHMARKS, MMB_OFFLINE):
        if benchmark.task == task:
            return benchmark
    if task == SHAPESWORLD:
        return SHAPESWORLD_BENCHMARK
    if task.startswith(f"{SHAPESWORLD}_"):
        family = task.removeprefix(f"{SHAPESWORLD}_")
        return Benchmark(f"{SHAPESWORLD_BENCHMARK.column}/{family}", task, "accuracy")
    return None


# Reported by the RC paper's authors (README of their released code) for LLaVA-1.5-7B (LoRA), training-free
# rows, in the paper's units. Shown beside measured rows, always labelled as reported. Token counts: 576 for
# the full model; RC's is the paper's own summary, "an average of 10%" of the 576 (57.6); ToMe's and PruMerge's
# are not stated.
REPORTED_SOURCE = "reported (RC paper)"  # arXiv 2409.01179, LLaVA-1.5-7B LoRA baseline
REPORTED_MODEL = "llava-v1.5-7b-lora"  # liuhaotian/llava-v1.5-7b-lora on lmsys/vicuna-7b-v1.5, not llava-hf's
REPORTED: tuple[dict, ...] = (
    {"method": "full", "budget": "all", "visual_tokens": 576, "SQA-IMG": 68.40, "TextVQA": 58.20, "MME": 1476.9,
     "VQAv2": 79.10, "POPE": 86.40, "MMB": 66.10},
    {"method": "tome", "budget": "as reported", "visual_tokens": None, "SQA-IMG": 50.00, "TextVQA": 45.30,
     "MME": 1138.0, "VQAv2": 57.10, "POPE": 52.50, "MMB": 43.70},
    {"method": "prumerge", "budget": "adaptive", "visual_tokens": None, "SQA-IMG": 68.52, "TextVQA": 53.51,
     "MME": 1191.5, "VQAv2": 65.90, "POPE": 70.70, "MMB": 56.78},
    {"method": "rc", "budget": "adaptive", "visual_tokens": 0.10 * 576, "SQA-IMG": 69.01, "TextVQA": 55.51,
     "MME": 1284.9, "VQAv2": 70.41, "POPE": 72.00, "MMB": 57.90},
)
# The cells of the reported rows (rclib eval --paper): ToMe's count is not stated; it runs at RC's reported mean.
PAPER_TOME_BUDGET = "58"
PAPER_CELLS: tuple[tuple[str, str], ...] = (("full", "all"), ("tome", PAPER_TOME_BUDGET), ("prumerge", "adaptive"),
                                            ("rc", "adaptive"))
ASSUMED_RATE = 25.0  # questions a second per GPU, LLaVA-1.5-7B in float16 at batch 16 (a guess until measured)


def paper_tasks(judge_key: bool) -> tuple[str, ...]:
    """The lmms-eval tasks of the paper's columns; MMB offline (rule matching) without an OpenAI key."""
    return tuple(MMB_OFFLINE.task if b.column == "MMB" and not judge_key else b.task
                 for b in PAPER_BENCHMARKS if b.in_paper)


def task_questions(task: str) -> int | None:
    """Questions of a known task (paper benchmarks), else None."""
    benchmark = benchmark_for(task)
    return benchmark.questions if benchmark and benchmark.questions else None
