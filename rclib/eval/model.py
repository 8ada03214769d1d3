"""rclib as an lmms-eval model: ``--model rclib --model_args pretrained=...,method=rc,budget=64,...``.

lmms-eval finds the model through its entry-point group ``lmms_eval.models`` (``rclib.eval:manifest``), so an
installed rclib needs no path or environment setting. Every request runs the real path of
:class:`~rclib.models.CompressedModel`: ``encode`` a batch, then ``run`` it: compress with the method (each
sample its own K; an inside-LLM method prunes while generating) and generate greedily.

model_args: ``pretrained`` (registry name, hub id or folder), ``text_encoder``, ``method``, ``budget``
("adaptive", a token count, or a share of N such as 64/576, read by :func:`rclib.methods.parse_budget`),
``dtype``, ``cache`` (a folder: answers are stored there batch by batch, so an interrupted run resumes),
then any option of :func:`rclib.load` (image_preprocess, prompt_format), of
:class:`~rclib.models.TextOptions`, or of the method (``rclib.METHODS[method].options``); ``preset`` goes to
the text score and to a method that has presets (rc). Options are checked at start-up, on one gray image,
and an unknown one fails naming the valid ones.

Visual tokens: the number of tokens the LLM saw is recorded per request (cached answers keep theirs). At
the end of the run the means, over all requests and per task, go into the results file through lmms-eval's
``log_metrics``: ``throughput.avg_visual_tokens`` and ``throughput.avg_visual_tokens/<task>``.
"""
from __future__ import annotations

import inspect
import json
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from lmms_eval.api.model import lmms
from lmms_eval.caching.response_cache import ResponseCache
from lmms_eval.models.model_utils.gen_metrics import log_metrics
from lmms_eval.utils import Collator
from PIL import Image
from tqdm import tqdm

from rclib.eval.checkpoints import input_format
from rclib.methods import METHODS, parse_budget
from rclib.methods.common import ADAPTIVE
from rclib.models import TextOptions, load

GRAY_SIDE = 336  # pixels of the option-check image for a checkpoint without one input size
DEFAULT_MAX_NEW_TOKENS = 1024  # lmms-eval's llava_hf default when a task sets no max_new_tokens
RUN_SETTINGS = ("batch_size", "device", "cache")  # how to run, not what is computed
MODEL_ARGS = ("pretrained", "text_encoder", "method", "budget", "dtype", *RUN_SETTINGS)


def load_option_names() -> set[str]:
    """Options of :func:`rclib.load` a model_arg may set (besides pretrained, text_encoder, device, dtype)."""
    return set(inspect.signature(load).parameters) - {"name_or_path", "text_encoder", "device", "dtype"}


def method_option_names(method: str) -> set[str]:
    """The method's options, and ``preset`` where its function takes one."""
    spec = METHODS[method]
    return set(spec.options) | ({"preset"} & set(inspect.signature(spec.fn).parameters))


def option_value(value):
    """A model_arg as the option takes it: lmms-eval parses numbers and booleans; a JSON array (``layers=[1,2]``,
    kept whole by lmms-eval's comma split) becomes a tuple."""
    return tuple(json.loads(value)) if isinstance(value, str) and value.startswith("[") else value


def split_options(method: str, options: dict) -> tuple[dict, dict, dict]:
    """model_args beyond the named ones -> (load options, text options, method options); ``preset`` goes to both
    the text options and the method's. Unknown options raise, naming the valid ones."""
    options = {name: option_value(value) for name, value in options.items()}
    load_names, text_names = load_option_names(), TextOptions.names() | {"preset"}
    method_names = method_option_names(method)
    unknown = sorted(options.keys() - load_names - text_names - method_names)
    if unknown:
        raise ValueError(f"rclib model_args: unknown {', '.join(unknown)}. Valid: {', '.join(MODEL_ARGS)}; load "
                         f"options {', '.join(sorted(load_names))}; text options {', '.join(sorted(text_names))}; "
                         f"options of method {method!r}: {', '.join(sorted(method_names)) or 'none'}")
    return ({k: v for k, v in options.items() if k in load_names},
            {k: v for k, v in options.items() if k in text_names},
            {k: v for k, v in options.items() if k in method_names})


def gray_image(model) -> Image.Image:
    """A uniform image of the checkpoint's input size, to try the options on before the first request."""
    size = getattr(model.model.config.vision_config, "image_size", GRAY_SIDE)  # Qwen2.5-VL: any size
    return Image.new("RGB", (size, size), (128, 128, 128))


def greedy_length(gen_kwargs: dict, task: str) -> int:
    """max_new_tokens of a greedy request; sampling or beam search raise (rclib decodes greedily)."""
    sampling = gen_kwargs.get("do_sample") or (gen_kwargs.get("temperature") or 0) > 0
    if sampling or (gen_kwargs.get("num_beams") or 1) > 1:
        raise ValueError(f"task {task!r} asks for sampling or beam search ({gen_kwargs}); rclib's model decodes "
                         "greedily: set temperature=0, do_sample=false, num_beams=1 (lmms-eval --gen_kwargs)")
    return int(gen_kwargs.get("max_new_tokens") or gen_kwargs.get("max_gen_toks") or DEFAULT_MAX_NEW_TOKENS)


def cut_at_stop(text: str, until) -> str:
    """The text up to the first stop string (greedy decoding past a stop string does not change what precedes it)."""
    for stop in [until] if isinstance(until, str) else (until or []):
        text = text.split(stop)[0]
    return text


class RclibModel(lmms):
    """An lmms-eval ``simple`` model over :class:`~rclib.models.CompressedModel`; see the module docstring."""

    def __init__(self, pretrained: str = "shapes", text_encoder: str | None = None, method: str = "rc",
                 budget: str | int = ADAPTIVE, batch_size: int | str = 1, device: str | None = None,
                 dtype: str | None = None, cache: str | None = None, **options):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if "target" in METHODS[method].needs:
            raise ValueError(f"method {method!r} reads the ground-truth mask of the asked-about objects, which "
                             "lmms-eval tasks do not give; run it with rclib bench")
        load_options, self.text_options, self.method_options = split_options(method, options)
        recognised = input_format(pretrained)  # a LLaVA-1.5 outside the registry: LLaVA-1.5's padding and prompt
        load_options = {**recognised, **load_options}
        self.accelerator = Accelerator()
        self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        if self._world_size > 1 and torch.cuda.is_available():
            device = f"cuda:{self.accelerator.local_process_index}"  # one GPU per process
        self.model = load(pretrained, text_encoder, device=device, dtype=dtype, **load_options)
        self.method, self.budget = method, str(budget)
        self.batch_size_per_process = int(batch_size)
        self.cache_folder = Path(cache) if cache else None
        # what the answers depend on, to key the cache: everything but the run settings
        self.fingerprint = "rclib|" + json.dumps(
            {"pretrained": pretrained, "text_encoder": text_encoder, "method": method, "budget": self.budget,
             "dtype": dtype, **recognised, **options}, sort_keys=True, default=str)
        self.visual_tokens: dict[str, list[float]] = defaultdict(list)  # task -> equivalent tokens of each request
        self.generated_tokens, self.seconds = 0, 0.0
        self.check_options()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def check_options(self) -> None:
        """Answer one gray image, so that a bad option value fails now rather than after the data has loaded."""
        try:
            encoded = self.model.encode([gray_image(self.model)], ["?"], **self.text_options)
            self.model.run(encoded, self.method, self.budget_for(encoded.n_tokens), 1, **self.method_options)
        except (TypeError, ValueError) as error:
            raise ValueError(f"rclib model_args rejected: {error}") from error

    def budget_for(self, n_tokens: int) -> int | None:
        """The budget model_arg as the method takes it (None: adaptive; always None for a method without budget)."""
        return parse_budget(self.budget, n_tokens) if METHODS[self.method].takes_budget else None

    def visual(self, request) -> Image.Image:
        """The one image of a request, as RGB."""
        _, _, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if len(visuals) != 1 or not isinstance(visuals[0], Image.Image):
            kinds = ", ".join(type(v).__name__ for v in visuals) or "none"
            raise ValueError(f"task {task!r} document {doc_id} comes with visuals [{kinds}]; rclib's model answers "
                             "about exactly one image per question")
        return visuals[0].convert("RGB")

    def answer_batch(self, requests: list) -> list[tuple[str, float]]:
        """(answer, visual tokens the LLM read: the equivalent tokens, their mean over its layers) for requests
        sharing their generation settings."""
        start = time.perf_counter()
        gen_kwargs = requests[0].args[1]
        max_new_tokens = greedy_length(gen_kwargs, requests[0].task_name)
        encoded = self.model.encode([self.visual(r) for r in requests], [r.args[0] for r in requests],
                                    **self.text_options)
        run = self.model.run(encoded, self.method, self.budget_for(encoded.n_tokens), max_new_tokens,
                             check_values=False, **self.method_options)  # the model's own encoder outputs
        texts = [cut_at_stop(text, gen_kwargs.get("until")) for text in run.texts]
        tokenizer = self.model.processor.tokenizer
        self.generated_tokens += sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        self.seconds += time.perf_counter() - start
        return [(text, k) for text, k in zip(texts, run.equivalent_tokens.tolist())]

    def open_cache(self) -> ResponseCache | None:
        """lmms-eval's response cache in the ``cache`` folder: one SQLite file for all processes, one log each."""
        if self.cache_folder is None:
            return None
        self.cache_folder.mkdir(parents=True, exist_ok=True)
        datasets = {task: "|".join(getattr(split, "_fingerprint", "") for split in splits.values())
                    for task, splits in self.task_dict.items()}  # a regenerated dataset invalidates its answers

        def opened() -> ResponseCache:
            return ResponseCache(db_path=str(self.cache_folder / "responses.db"),
                                 audit_path=str(self.cache_folder / f"rank{self.rank}.audit.jsonl"),
                                 model_fingerprint=self.fingerprint, task_fingerprints=datasets)

        if self._world_size == 1:
            return opened()
        # The first open sets the SQLite file up (WAL journal); processes doing it at once find it locked.
        cache = opened() if self.rank == 0 else None
        self.accelerator.wait_for_everyone()
        return cache or opened()

    def generate_until(self, requests: list) -> list[str]:
        """Greedy answers, batch by batch; with ``cache``, each batch is stored as soon as it is answered."""
        batches = Collator(requests, sort_fn=lambda r: -len(r.args[0]), group_fn=lambda r: r.args[1], grouping=True)
        cache = self.open_cache()
        answers = []
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc=f"{self.method} answering", unit="question")
        try:
            for batch in batches.get_batched(n=self.batch_size_per_process):
                answered = (cache.execute(SimpleNamespace(generate_until=self.answer_batch), "generate_until", batch)
                            if cache else self.answer_batch(batch))
                progress.update(len(batch))
                for request, (text, k) in zip(batch, answered):  # a cached answer comes back as a list
                    if not request.metadata.get("__padding_only__"):  # lmms-eval's filler to even out processes
                        self.visual_tokens[request.task_name].append(k)
                    answers.append(text)
        finally:
            progress.close()
            if cache:
                cache.close()
        return batches.get_original(answers)

    def loglikelihood(self, requests: list) -> list[tuple[float, bool]]:
        tasks = sorted({r.task_name for r in requests})
        raise ValueError(f"task(s) {', '.join(tasks)} score answer choices by log-likelihood; rclib's model answers "
                         "by generation: use the benchmark's generation variant (e.g. seedbench, not seedbench_ppl)")

    def generate_until_multi_round(self, requests: list) -> list[str]:
        tasks = sorted({r.task_name for r in requests})
        raise ValueError(f"task(s) {', '.join(tasks)} are multi-round; rclib's model answers one question per image")

    def clean(self) -> None:
        """End of the run (every process calls it once): the visual-token means of all processes into the results."""
        per_process = gather_object([(dict(self.visual_tokens), self.generated_tokens, self.seconds)])
        if self.rank == 0:
            tokens: dict[str, list[int]] = defaultdict(list)
            for visual, _, _ in per_process:
                for task, counts in visual.items():
                    tokens[task] += counts
            generated, seconds = sum(p[1] for p in per_process), sum(p[2] for p in per_process)
            everything = [k for counts in tokens.values() for k in counts]
            log_metrics(total_elapsed_time=seconds, total_gen_tokens=generated,
                        avg_speed=generated / seconds if seconds else 0.0,
                        additional_metrics={"visual_tokens": float(np.mean(everything)) if everything else None,
                                            **{f"visual_tokens/{task}": float(np.mean(counts))
                                               for task, counts in sorted(tokens.items())}})
        super().clean()
