"""``rclib speed``: what compression buys, measured against the bound, the released code's way and the peers.

    rclib speed [--out benchmarks/results] [--device cpu|cuda] [--dtype fp32|fp16|bf16] [--lm tinyllama|7b|13b]
                [--threads N] [--repeats 3] [--batches 1 4 16] [--new-tokens 8] [--quick]

Writes ``speed-<machine>.json`` (machine, versions, every measured row, a ``summary``) and
``speed-<machine>.md`` (the tables) under ``--out``. A benchmark, not a test: timings are medians after
a warm-up, GPU work is synchronised before every clock reading, and nothing asserts a time. Sections:

- ``compress``: every method's compression step on LLaVA-1.5-shaped inputs (N = 576, C = 1024), B = 1
  on one thread; the extra memory its call takes at B = 64; on a GPU, the kernels it launches.
- ``launches``: the aten ops (about one GPU kernel launch each) and host syncs of one compression call per
  method at N = 576 and 2,880, B = 1 and 16, fixed and adaptive budgets, value checks on and off
  (:mod:`rclib.launches`; counts, the same on any machine).
- ``filters``: the dynamic scale filter alone, and how often its LOF count equals scikit-learn's when
  half precision makes ties (the agreement the test suite bounds).
- ``e2e``: a LLaVA-1.5-architecture model with random weights at real shapes (CLIP ViT-L/14-336 vision
  tower and text tower, a Llama of the ``--lm`` shape), driven through rclib's own path (encode,
  compress, splice, generate): vision, text, compression, prefill, decode, total, per method; the
  *bound* of each (the same vision and LLM time with a compressor that costs nothing); and the
  released code's way of doing RC's work (:func:`released_compress`: scikit-learn LOF on the host
  three times, a Python loop over the centres, a second vision forward for the text score).
- ``batch``: images per second at each batch size, all tokens vs rc, with rc's per-sample K.
- ``cost``: the analytic prefill cost (:mod:`rclib.cost`) of LLaVA-1.5-7B and 13B per method and K,
  and the formula against torch's FlopCounterMode on the measured model's shape and on 7B / 13B.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rclib import cost
from rclib.filters import outlier_count
from rclib.launches import count_ops
from rclib.methods import METHODS, compress
from rclib.methods.common import ADAPTIVE
from rclib.models.llava import CompressedLlava, timed
from rclib.models.text import SYSTEM_PROMPT, TransformersTextTower, text_similarity
from rclib.models.vision import cls_attention
from rclib.outputs import atomic_file, write_json

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# "wall": elapsed time. "cpu": this thread's CPU time, with one torch thread on the CPU: the work done,
# whatever else the machine runs (time the OS gives to other processes is not counted)
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
# every method that runs without a benchmark's ground truth (the oracle needs the asked-about objects)
BENCH_METHODS = tuple(name for name, spec in METHODS.items() if "target" not in spec.needs)
QUESTION = "What is the colour of the bus in this picture? Answer the question using a single word or phrase."
DEFAULT_OUT = Path("benchmarks") / "results"  # relative to where it runs: the repository root for `make bench`


@dataclass(frozen=True)
class ModelShapes:
    """The shapes of the random-weight LLaVA the end-to-end rows run (default: LLaVA-1.5's vision side)."""

    image_size: int = 336  # CLIP ViT-L/14-336: 24 x 24 = 576 patches
    patch_size: int = 14
    vision_width: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    vision_mlp: int = 4096
    text_width: int = 768  # CLIP ViT-L/14's text tower
    text_layers: int = 12
    text_heads: int = 12
    joint_dim: int = 768  # CLIP's joint embedding space
    lm: cost.DecoderArch = cost.TINYLLAMA_1B  # the language model

    @property
    def n_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


# --quick: the whole runner at toy shapes (a smoke test, minutes become seconds)
QUICK_SHAPES = ModelShapes(image_size=112, patch_size=8, vision_width=64, vision_layers=2, vision_heads=4,
                           vision_mlp=128, text_width=32, text_layers=1, text_heads=2, joint_dim=32,
                           lm=cost.DecoderArch(layers=17, width=64,  # 17: SparseVLM prunes before layer 16
                           mlp_width=128, vocab=512, heads=4, kv_heads=2))


@dataclass
class SpeedConfig:
    device: str = "cpu"  # "cpu" or "cuda"
    dtype: str = "fp32"  # model and input dtype: fp32, fp16 or bf16
    clock: str = "wall"  # a key of CLOCKS; "cpu" runs everything on one thread
    lm: str = "tinyllama"  # the end-to-end model's LLM shape: a key of rclib.cost.ARCHS
    threads: int | None = None  # torch threads for the end-to-end rows (None: torch's default)
    repeats: int = 3  # timed end-to-end runs per row, after one warm-up (compression rows: 10x)
    batches: tuple[int, ...] = (1, 4, 16)  # batch sizes of the scaling rows
    new_tokens: int = 8  # tokens decoded per answer (forced: no early EOS)
    memory_batch: int = 64  # batch of the compression step's memory measurement
    agreement_rows: int = 100  # score vectors per distribution and dtype in the LOF agreement check
    methods: tuple[str, ...] = BENCH_METHODS
    quick: bool = False  # toy shapes and one repeat: checks the runner, measures nothing worth quoting
    shapes: ModelShapes = field(init=False)

    def __post_init__(self):
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but torch sees no CUDA device here; use --device cpu")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.lm not in cost.ARCHS:
            raise ValueError(f"lm must be one of {sorted(cost.ARCHS)}, got {self.lm!r}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {self.clock!r}")
        if self.clock == "cpu" and (self.device != "cpu" or self.threads not in (None, 1)):
            raise ValueError("the cpu clock counts one thread's CPU time: use it on the CPU with --threads 1 "
                             "(or leave --threads out); on a GPU use the wall clock")
        if self.clock == "cpu":
            self.threads = 1
        unknown = set(self.methods) - set(BENCH_METHODS)
        if unknown:
            raise ValueError(f"methods {sorted(unknown)} cannot be timed here; choose from {list(BENCH_METHODS)}")
        if self.repeats < 1 or self.new_tokens < 2 or min(self.batches, default=0) < 1:
            raise ValueError("repeats and batches must be >= 1 and new_tokens >= 2 (decode speed needs two tokens)")
        self.methods = tuple(dict.fromkeys(("full", "rc", *self.methods)))  # the bound needs both
        self.shapes = QUICK_SHAPES if self.quick else ModelShapes(lm=cost.ARCHS[self.lm])
        if self.quick:
            self.repeats, self.batches, self.memory_batch, self.agreement_rows = 1, (1, 2), 4, 5

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def stopwatch(self) -> Stopwatch:
        return Stopwatch(self.torch_device, CLOCKS[self.clock])


# ---------------------------------------------------------------- measuring

@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch threads (None: leave the setting alone)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Stopwatch:
    """Times calls on one clock, the device synchronised on both ends (``rclib.models.llava.timed``)."""

    device: torch.device
    clock: Callable[[], float] = time.perf_counter  # a value of CLOCKS

    def __call__(self, fn, *args, **kwargs) -> tuple:
        """(fn(*args, **kwargs), seconds)."""
        return timed(self.device, fn, *args, clock=self.clock, **kwargs)

    def read(self) -> float:
        """The clock, read once the device has finished its queued work."""
        return timed(self.device, self.clock, clock=self.clock)[0]


def round_robin(calls: dict[str, Callable], repeats: int, watch: Stopwatch) -> dict[str, list[float]]:
    """Seconds of ``repeats`` runs of each call after one warm-up each, the calls taking turns so that a
    change in the machine's load touches all of them alike."""
    for call in calls.values():
        call()
    seconds = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            seconds[name].append(watch(call)[1])
    return seconds


def peak_extra_bytes(fn, device: torch.device) -> int:
    """The most memory ``fn()`` holds at once beyond what was allocated before it (torch allocations).

    GPU: the caching allocator's peak. CPU: torch's profiler sees every allocation and free; the
    peak of their running sum.
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    held = peak = 0
    for event in events:
        held += event.nbytes()
        peak = max(peak, held)
    return peak


def kernel_launches(fn, device: torch.device) -> int | None:
    """GPU kernels one call of ``fn`` launches (memory copies and sets excluded); None off the GPU."""
    if device.type != "cuda":
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA
               and not e.name.startswith(("Memcpy", "Memset")))


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on."""
    import transformers

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = names[0].strip() if names else cpu
    meminfo = Path("/proc/meminfo")
    memory = re.search(r"MemTotal:\s*(\d+)", meminfo.read_text()) if meminfo.exists() else None
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(int(memory.group(1)) / 2**20, 1) if memory else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    info["load_average_1_5_15"] = load_average()
    return info


def load_average() -> list[float] | None:
    """The system's 1, 5 and 15 minute load averages (None where the platform has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_name(info: dict) -> str:
    """A file-name slug for the machine: the GPU's name, or the CPU's and its core count."""
    name = info["device"] if info["device"] != "cpu" else f"{info['cpu']} {info['cores']}c"
    words = re.sub(r"\(r\)|\(tm\)|cpu|processor|\d+-core", " ", name.lower())
    return "-".join(re.findall(r"[a-z0-9]+", words))[:48]


# ---------------------------------------------------------------- the compression step

def llava_like_inputs(batch: int, n: int = 576, width: int = 1024, device="cpu", dtype=torch.float32, seed: int = 0):
    """(tokens [B, N, C], cls_attn [B, N], text_sim [B, N], keys [B, N, C]) shaped and spread like LLaVA-1.5's.

    The [CLS] attention is a peaked softmax (a few tokens take most of it), the text scores are small
    cosines; RC keeps about 9% of the tokens on them (the paper: ~10%).
    """
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, n, width, generator=g)
    cls_attn = torch.softmax(torch.randn(batch, n, generator=g) * 3, dim=1)
    text_sim = torch.randn(batch, n, generator=g) * 0.1
    keys = torch.randn(batch, n, width, generator=g)
    return tokens.to(device, dtype), cls_attn.to(device), text_sim.to(device), keys.to(device, dtype)


def compress_rows(config: SpeedConfig) -> list[dict]:
    """Each method's compression step: B = 1 on one thread (median of 10 x repeats), memory at a large batch."""
    device, dtype = config.torch_device, config.torch_dtype
    one = llava_like_inputs(1, device=device, dtype=dtype)
    many = llava_like_inputs(config.memory_batch, device=device, dtype=dtype)
    calls = {method: (lambda inputs=one, method=method: compress(*inputs, method=method))
             for method in before_llm(config.methods)}
    rows = []
    with torch_threads(1):
        seconds = round_robin(calls, 10 * config.repeats, config.stopwatch)
        for method, call in calls.items():
            rows.append({
                "method": method, "batch": 1, "threads": 1,
                "ms": 1e3 * statistics.median(seconds[method]), "ms_min": 1e3 * min(seconds[method]),
                "tokens": float(call().n_output.float().mean()),
                "kernel_launches": kernel_launches(call, device),
                "memory_batch": config.memory_batch,
                "peak_extra_mib": peak_extra_bytes(lambda: call(many), device) / 2**20,
            })
    return rows


def before_llm(methods: tuple[str, ...]) -> list[str]:
    """The methods that compress before the LLM (the others prune inside it, while generating)."""
    return [m for m in methods if METHODS[m].stage == "before_llm"]


def filter_rows(config: SpeedConfig) -> list[dict]:
    """The dynamic scale filter alone on a 576-token [CLS] attention, B = 1, one thread."""
    _, cls_attn, _, _ = llava_like_inputs(1, device=config.torch_device)
    calls = {rule: (lambda rule=rule: outlier_count(cls_attn, rule, 20)) for rule in ("lof", "iqr")}
    with torch_threads(1):
        seconds = round_robin(calls, 10 * config.repeats, config.stopwatch)
    return [{"filter": rule, "batch": 1, "threads": 1, "ms": 1e3 * statistics.median(values),
             "ms_min": 1e3 * min(values)} for rule, values in seconds.items()]


# Score vectors like those the filter meets, drawn continuous, then rounded to a low-precision dtype
AGREEMENT_SCORES = {
    "cls-attention (softmax, N=576)": lambda rng: rng.dirichlet(np.full(576, 0.3)),
    "text cosine (N=576)": lambda rng: rng.normal(0.15, 0.05, 576),
    "cls-attention (N=144)": lambda rng: rng.dirichlet(np.full(144, 0.3)),
}


def agreement_rows(config: SpeedConfig) -> list[dict]:
    """How often rclib's LOF keep-count equals scikit-learn's, by score kind and rounding dtype."""
    rows = []
    for name, draw in AGREEMENT_SCORES.items():
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            rng = np.random.default_rng(0)
            diffs = []
            for _ in range(config.agreement_rows):
                x = torch.tensor(draw(rng)).to(dtype).double()
                diffs.append(abs(int(outlier_count(x, "lof", 20)) - sklearn_lof_count(x.numpy(), 20)))
            diffs = np.array(diffs)
            rows.append({"scores": name, "dtype": str(dtype).removeprefix("torch."), "rows": len(diffs),
                         "same_count": float(np.mean(diffs == 0)), "mean_abs_diff": float(diffs.mean()),
                         "max_abs_diff": int(diffs.max())})
    return rows


# ---------------------------------------------------------------- the released code's way (baseline)

def sklearn_lof_count(scores: np.ndarray, n_neighbors: int) -> int:
    """Outliers scikit-learn's LocalOutlierFactor(contamination='auto') finds among 1-D scores [n]."""
    from sklearn.neighbors import LocalOutlierFactor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns and clamps when n_neighbors >= n
        labels = LocalOutlierFactor(n_neighbors=n_neighbors, contamination="auto").fit_predict(scores.reshape(-1, 1))
    return int((labels == -1).sum())


def released_lof_ratio(scores: torch.Tensor, n_neighbors: int) -> float:
    """The released code's filter: the scores [1, n] to the host as float32, the share of LOF outliers."""
    x = scores.float().cpu().numpy().reshape(-1)
    return sklearn_lof_count(x, n_neighbors) / len(x)


def complement(index: torch.Tensor, n: int) -> torch.Tensor:
    """[1, n - len] the ascending positions of 0..n-1 not in ``index`` [1, len]."""
    missing = torch.ones(n, dtype=torch.bool, device=index.device)
    missing[index[0]] = False
    return torch.nonzero(missing).flatten()[None]


@torch.no_grad()
def released_compress(queries: torch.Tensor, keys: torch.Tensor, features: torch.Tensor,
                      patch_embeds: torch.Tensor, text_embed: torch.Tensor, knn_k: int = 32) -> torch.Tensor:
    """RC as the authors' released code computes it after its vision forwards, for one image.

    queries, keys [1, 1 + N, C]: the last vision layer's q_proj / k_proj outputs (CLS first);
    features [1, N, C]: the LLaVA feature layer's patches; patch_embeds [1, N, D]: the final patch
    tokens through the visual projection (their second forward); text_embed [1, D].
    Returns the output tokens [1, K, C]: kept and recovered (original order), the merged centres
    (descending [CLS] attention), the extra token. Its way: the whole attention map, each filter's
    count by scikit-learn on the host, a Python loop over the centres, the width-based centre count
    and the keys read from the full grid (see rclib's ``RCConfig`` released switches).
    """
    _, N, C = features.shape
    attention = torch.softmax(queries @ keys.transpose(1, 2) * C ** -0.5, dim=-1)  # [1, 1 + N, 1 + N]
    cls_attn = attention[:, 0, 1:]  # [1, N]
    text = F.normalize(text_embed, dim=-1)[:, None]  # [1, 1, D]
    score = (text @ F.normalize(patch_embeds, dim=-1).transpose(1, 2))[:, 0] * patch_embeds.shape[-1] ** -0.5

    visual = cls_attn.topk(int(N * released_lof_ratio(cls_attn, 20)), dim=1).indices  # [1, n_v]
    score[:, visual[0]] = score.min(-1).values
    textual = score.topk(int((N - visual.shape[1]) * released_lof_ratio(score, 20)), dim=1).indices
    selected = torch.cat([visual, textual], 1).sort(1).values  # [1, n_v + n_t]
    kept = features.gather(1, selected[..., None].expand(-1, -1, C))

    rest = complement(selected, N)  # [1, M]
    rest_x = features.gather(1, rest[..., None].expand(-1, -1, C))  # [1, M, C]
    rest_attn, rest_score = cls_attn.gather(1, rest), 50 * score.gather(1, rest)
    n_centres = int(C * released_lof_ratio(rest_attn, 10))  # the feature width, not M
    centre = rest_attn.topk(n_centres, dim=1).indices  # [1, n_c] positions within the rest
    others = complement(centre, rest.shape[1])  # [1, M - n_c]
    grid_keys = keys[:, 1:]  # positions within the rest read from the full grid, as released
    centre_key = F.normalize(grid_keys.gather(1, centre[..., None].expand(-1, -1, C)), dim=-1)[0]
    other_key = F.normalize(grid_keys.gather(1, others[..., None].expand(-1, -1, C)), dim=-1)[0]
    centre_x, other_x = rest_x[0, centre[0]], rest_x[0, others[0]]
    centre_attn, other_attn = rest_attn[0, centre[0]], rest_attn[0, others[0]]
    centre_score, other_score = rest_score[0, centre[0]], rest_score[0, others[0]]
    merged = torch.zeros_like(centre_x)
    for i in range(n_centres):  # every other centre and every non-centre is a candidate
        candidates_key = torch.cat([centre_key[:i], centre_key[i + 1:], other_key])
        candidates_x = torch.cat([centre_x[:i], centre_x[i + 1:], other_x])
        candidates_attn = torch.cat([centre_attn[:i], centre_attn[i + 1:], other_attn])
        candidates_score = torch.cat([centre_score[:i], centre_score[i + 1:], other_score])
        nearest = (candidates_key @ centre_key[i] + candidates_score).topk(knn_k).indices
        merged[i] = centre_x[i] + (candidates_x[nearest] * candidates_attn[nearest, None]).sum(0)
    extra = (other_x * other_attn[:, None]).sum(0, keepdim=True)  # [1, C]
    merged = torch.cat([merged, extra]) if n_centres else merged[:0]  # no centre: the extra token goes too
    return torch.cat([kept, merged[None]], 1)


# ---------------------------------------------------------------- a random-weight LLaVA at real shapes

def word_tokenizer(texts: list[str], special: list[str], template: str, **special_tokens):
    """A transformers fast tokenizer whose vocabulary is the words of ``texts`` (word level, no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]+", text)} - set(special))
    vocab = {token: i for i, token in enumerate(special + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=special[0]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, vocab[t]) for t in special if t in template])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=special[0], **special_tokens)


def build_llava(shapes: ModelShapes, device: torch.device, dtype: torch.dtype, seed: int = 0) -> CompressedLlava:
    """LLaVA-1.5's architecture with random weights: CLIP vision and text towers, a Llama of ``shapes.lm``."""
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPVisionConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    texts = [SYSTEM_PROMPT, QUESTION, "USER ASSISTANT :"]
    tokenizer = word_tokenizer(texts, ["<unk>", "<s>", "</s>", "<pad>", "<image>"], "<s> $A", bos_token="<s>",
                               eos_token="</s>", pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    clip_tokenizer = word_tokenizer(texts, ["<|endoftext|>", "<|startoftext|>"], "<|startoftext|> $A <|endoftext|>",
                                    bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    vision = CLIPVisionConfig(hidden_size=shapes.vision_width, intermediate_size=shapes.vision_mlp,
                              num_hidden_layers=shapes.vision_layers, num_attention_heads=shapes.vision_heads,
                              image_size=shapes.image_size, patch_size=shapes.patch_size,
                              projection_dim=shapes.joint_dim)
    text = CLIPTextConfig(hidden_size=shapes.text_width, intermediate_size=4 * shapes.text_width,
                          num_hidden_layers=shapes.text_layers, num_attention_heads=shapes.text_heads,
                          max_position_embeddings=77, projection_dim=shapes.joint_dim, bos_token_id=1, eos_token_id=0,
                          pad_token_id=0)
    llm = shapes.lm.llama_config()
    llm.bos_token_id, llm.eos_token_id, llm.pad_token_id = 1, 2, 3
    config = LlavaConfig(vision_config=vision, text_config=llm, image_seq_length=shapes.n_tokens,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(device, dtype).eval()
    model.generation_config.eos_token_id = None  # every answer runs its full length: timings compare
    # the CLIP whose text tower scores the patches; of its vision side only the head is used (no layers built)
    clip_config = CLIPConfig(text_config=text.to_dict(), projection_dim=shapes.joint_dim,
                             vision_config={**vision.to_dict(), "num_hidden_layers": 0})
    clip = CLIPModel(clip_config).to(device, dtype).eval()
    side = shapes.image_size
    images = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=shapes.patch_size,
                               vision_feature_select_strategy="default",
                               num_additional_image_tokens=1)  # +1: CLIP's CLS, as llava-hf processors
    return CompressedLlava(model, processor, TransformersTextTower(clip, clip_tokenizer), name=f"random {shapes.lm}",
                           image_preprocess="pad", prompt_format="vicuna_v1")  # as LLaVA-1.5 was evaluated


def random_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` random 480 x 640 RGB photographs' worth of pixels (uint8 HWC)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8) for _ in range(count)]


# ---------------------------------------------------------------- end to end

class VisionProbe:
    """Hooks on the vision tower during an encode: its time, its final tokens, the last layer's q and k."""

    def __init__(self, model: CompressedLlava, watch: Stopwatch):
        self.tower = model.model.model.vision_tower
        self.watch = watch
        self.seconds = 0.0
        self.caught: dict[str, torch.Tensor] = {}

    def __enter__(self) -> VisionProbe:
        attention = self.tower.encoder.layers[-1].self_attn

        def start(module, args):
            self.started = self.watch.read()

        def stop(module, args, out):
            self.seconds = self.watch.read() - self.started
            self.caught["last_hidden_state"] = out.last_hidden_state

        self.hooks = [self.tower.register_forward_pre_hook(start), self.tower.register_forward_hook(stop),
                      attention.q_proj.register_forward_hook(lambda m, a, out: self.caught.__setitem__("q", out)),
                      attention.k_proj.register_forward_hook(lambda m, a, out: self.caught.__setitem__("k", out))]
        return self

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()


class TokenClock:
    """A generation streamer that notes when the prompt went in and when each new token came out (the
    tokens reach it on the host, so the device has finished them)."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.times: list[float] = []

    def put(self, value):  # transformers calls this with the prompt first, then with each new token
        self.times.append(self.clock())

    def end(self):
        pass


def generate_timed(model: CompressedLlava, encoded, result, new_tokens: int, watch: Stopwatch) -> dict:
    """Splice + greedy generation of exactly ``new_tokens`` tokens, with the prefill and decode split."""
    tokens = TokenClock(watch.clock)
    ids, seconds = watch(model.generate_ids, encoded, result, new_tokens, streamer=tokens)
    assert ids.shape[1] == new_tokens and len(tokens.times) == new_tokens + 1, "generation did not run its length"
    prompt, first, last = tokens.times[0], tokens.times[1], tokens.times[-1]
    return {"prefill_s": first - prompt, "decode_s": last - first, "generate_s": seconds,
            "decode_tokens_per_s": len(encoded) * (new_tokens - 1) / max(last - first, 1e-9)}


def encode_probed(model: CompressedLlava, images, questions, watch: Stopwatch) -> tuple:
    """(encoded, its seconds, the vision tower's share of them, what the probe caught)."""
    with VisionProbe(model, watch) as probe:
        encoded, seconds = watch(model.encode, images, questions)
    return encoded, seconds, probe.seconds, probe.caught


def rclib_rc_work(model: CompressedLlava, encoded, caught: dict, text_embed: torch.Tensor):
    """rclib's share of RC's work after the one vision forward, configured as the released code
    (``preset="released"``: no post-layernorm before the projection, its stage counts and quirks): text
    score, [CLS] attention, compression."""
    patch_embeds = model.text_tower.project_patches(caught["last_hidden_state"], post_layernorm=False)
    text_sim = text_similarity(text_embed, patch_embeds).to(model.device)
    cls_attn = cls_attention(caught["q"], caught["k"])
    return compress(encoded.features, cls_attn, text_sim, encoded.keys, method="rc", preset="released",
                    text_dim=model.text_tower.projection_dim)


def released_second_forward(model: CompressedLlava, encoded) -> torch.Tensor:
    """The released code's text side of the image: a second vision forward, its final patch tokens through
    the visual projection without post-layernorm -> [1, N, D]."""
    second = model.model.model.vision_tower(encoded.pixel_values).last_hidden_state  # [1, 1 + N, C]
    return model.text_tower.project_vision(second[:, 1:])


def llm_run(model: CompressedLlava, encoded, method: str, new_tokens: int, watch: Stopwatch) -> dict:
    """One method on an encoded batch: the image tokens the last LLM layer reads, the compression's and the
    LLM's seconds.

    Before-LLM methods: ``model.compress`` then :func:`generate_timed`. Inside-LLM methods prune while
    generating (``model.generate_inside``): the prefill is timed as a one-token generation, the decode as
    the rest of a full one.
    """
    if METHODS[method].stage == "before_llm":
        result, seconds = watch(model.compress, encoded, method)
        return {"tokens": int(result.n_output.max()), "compress_s": seconds,
                **generate_timed(model, encoded, result, new_tokens, watch)}
    _, prefill = watch(model.generate_inside, encoded, method, None, 1)
    (result, ids, _), generate = watch(model.generate_inside, encoded, method, None, new_tokens)
    assert ids.shape[1] == new_tokens, "generation stopped early: the benchmark model has no EOS"
    decode = max(generate - prefill, 1e-9)
    return {"tokens": int(result.n_output.max()), "compress_s": 0.0, "prefill_s": prefill, "decode_s": decode,
            "generate_s": generate, "decode_tokens_per_s": len(encoded) * (new_tokens - 1) / decode}


RELEASED_WAY = "rc (released way)"  # the e2e row of the released code's way


def stage(method: str) -> str:
    """Where an end-to-end row's method prunes (the released way compresses before the LLM)."""
    return "before_llm" if method == RELEASED_WAY else METHODS[method].stage


def e2e_rows(model: CompressedLlava, config: SpeedConfig) -> tuple[list[dict], dict]:
    """B = 1 end to end per method (medians of ``config.repeats`` runs after a warm-up), and the
    released code's way against rclib's on the same inputs."""
    watch, images, questions = config.stopwatch, random_images(1), [QUESTION]
    text_embed = model.text_tower.embed_text(questions)  # common to both ways of RC's work: not timed
    runs: list[dict[str, dict]] = []  # per repeat: method -> its row
    released: dict[str, list[float]] = {}  # rclib's and the released way's RC work, per run
    for repeat in range(config.repeats + 1):
        encoded, t_encode, t_vision, caught = encode_probed(model, images, questions, watch)
        if repeat == 0:  # a warm-up pass through the vision tower and the LLM, dropped
            llm_run(model, encoded, "rc", config.new_tokens, watch)
            continue
        rows = {method: llm_run(model, encoded, method, config.new_tokens, watch) for method in config.methods}
        if importable("sklearn"):
            ours, t_ours = watch(rclib_rc_work, model, encoded, caught, text_embed)
            patch_embeds, t_forward = watch(released_second_forward, model, encoded)
            theirs, t_rest = watch(released_compress, caught["q"], caught["k"], encoded.features, patch_embeds,
                                   text_embed.to(patch_embeds.dtype))
            # the LLM after the released way: the cost of any input of its K tokens (at least one)
            same_k = model.compress(encoded, "fastervlm", budget=max(1, theirs.shape[1]))
            rows[RELEASED_WAY] = {"tokens": theirs.shape[1], "compress_s": t_forward + t_rest,
                                  **generate_timed(model, encoded, same_k, config.new_tokens, watch)}
            for name, value in (("rclib_s", t_ours), ("released_s", t_forward + t_rest),
                                ("released_second_forward_s", t_forward), ("released_rest_s", t_rest),
                                ("tokens_rclib", int(ours.n_output[0])), ("tokens_released", theirs.shape[1])):
                released.setdefault(name, []).append(value)
        for row in rows.values():
            row.update(vision_s=t_vision, text_s=t_encode - t_vision, total_s=t_encode + row["compress_s"]
                       + row["generate_s"])
        add_bounds(rows)
        runs.append(rows)
    rows = [{"method": method, "batch": 1, "prunes": stage(method), **median_row([run[method] for run in runs])}
            for method in runs[0]]
    if released:
        released = {name: statistics.median(values) for name, values in released.items()}
        released["speedup"] = released["released_s"] / released["rclib_s"]
        released["speedup_without_second_forward"] = released["released_rest_s"] / released["rclib_s"]
    else:
        released = {"skipped": "the released way needs scikit-learn: pip install scikit-learn"}
    return rows, released


def importable(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def median_row(measured: list[dict]) -> dict:
    """The median of each quantity over runs (None where a run has none)."""
    return {name: None if any(run[name] is None for run in measured)
            else statistics.median(run[name] for run in measured) for name in measured[0]}


def add_bounds(rows: dict[str, dict]) -> None:
    """Each row's bound, within one run (method -> row): the best total any compressor before the LLM
    keeping the same K could reach, its vision and text time plus the LLM's time at K, with a
    compression that costs nothing.

    The LLM time at K is the median generation time of the run's before-LLM rows with K tokens (the
    LLM does not care which method chose them). ``bound_share`` = bound / total (1: the method costs
    nothing beyond its K; inside-LLM methods also pay for every token in their early layers); None
    where no before-LLM row has that K.
    """
    by_tokens: dict[int, list[float]] = {}
    for method, row in rows.items():
        if stage(method) == "before_llm":
            by_tokens.setdefault(row["tokens"], []).append(row["generate_s"])
    for row in rows.values():
        llm = by_tokens.get(row["tokens"])
        row["bound_s"] = row["vision_s"] + row["text_s"] + statistics.median(llm) if llm else None
        row["bound_share"] = row["bound_s"] / row["total_s"] if llm else None
        row["compress_share_of_vision"] = row["compress_s"] / row["vision_s"]


def batch_rows(model: CompressedLlava, config: SpeedConfig) -> list[dict]:
    """Images per second at each batch size, all tokens vs rc (one timed run each, after the B = 1 warm-up)."""
    watch, rows = config.stopwatch, []
    for batch in config.batches:
        images, questions = random_images(batch, seed=batch), [QUESTION] * batch
        for method in ("full", "rc"):
            encoded, t_encode, t_vision, _ = encode_probed(model, images, questions, watch)
            result, t_compress = watch(model.compress, encoded, method)
            llm = generate_timed(model, encoded, result, config.new_tokens, watch)
            total = t_encode + t_compress + llm["generate_s"]
            rows.append({"method": method, "batch": batch, "tokens_per_sample": result.n_output.tolist(),
                         "vision_s": t_vision, "compress_s": t_compress, "prefill_s": llm["prefill_s"],
                         "decode_tokens_per_s": llm["decode_tokens_per_s"], "total_s": total,
                         "images_per_s": batch / total})
    return rows


# ---------------------------------------------------------------- analytic cost

COST_BUDGETS = (64, 128, 192)  # the usual fixed-token settings of the field


def cost_rows(rc_tokens: float) -> list[dict]:
    """Prefill cost of LLaVA-1.5-7B and 13B: all tokens, compression before the LLM at each K (every
    rclib method, rc at its measured mean K too), and the methods that prune inside the LLM."""
    rows = []
    for arch_name in ("7b", "13b"):
        arch = cost.ARCHS[arch_name]
        settings = [("full", "all tokens", cost.LLAVA_IMAGE_TOKENS),
                    ("rc (adaptive)", "before the LLM", round(rc_tokens))]
        settings += [(f"any method at {k}", "before the LLM", k) for k in COST_BUDGETS]
        settings += [(f"fastv at {k}", f"inside: all tokens in layers 0-{cost.FASTV_LAYER - 1}", cost.fastv_schedule(k))
                     for k in COST_BUDGETS]
        if arch_name == "7b":  # SparseVLM publishes its schedule for the 7B model
            settings += [(f"sparsevlm at {k}", "inside: layers 2, 6, 15", schedule)
                         for k, schedule in cost.SPARSEVLM_7B_SCHEDULES.items()]
        for name, where, tokens in settings:
            rows.append({"model": f"llava-1.5-{arch_name}", "setting": name, "prunes": where,
                         **cost.cost_row(tokens, arch=arch)})
    return rows


def flop_check_rows(shapes: ModelShapes) -> list[dict]:
    """The prefill FLOP formula against torch's FlopCounterMode (meta device) at all and at 64 image tokens."""
    rows = []
    for name, arch in (("measured model's LLM", shapes.lm), ("llava-1.5-7b", cost.VICUNA_7B),
                       ("llava-1.5-13b", cost.VICUNA_13B)):
        for image_tokens in (cost.LLAVA_IMAGE_TOKENS, 64):
            n = image_tokens + cost.LLAVA_TEXT_TOKENS
            counted, formula = cost.counted_prefill_flops(arch, n), cost.prefill_flops(n, arch)
            rows.append({"model": name, "tokens": n, "formula_tflops": formula / 1e12,
                         "flop_counter_tflops": counted / 1e12, "ratio": counted / formula})
    return rows


def paper_check() -> dict:
    """The paper's cost claims (LLaVA-1.5-7B, A100, FP16) against the formulas at 576 and 58 image tokens."""
    full, rc = cost.cost_row(576), cost.cost_row(58)
    a100 = {"peak_flops": 312e12, "bandwidth": 2.0e12}  # A100 80 GB: dense FP16 tensor cores, HBM bandwidth
    roofline = {k: 1e3 * cost.roofline_seconds(cost.prefill_flops(k + cost.LLAVA_TEXT_TOKENS), cost.weight_bytes(),
                                               **a100) for k in (576, 58)}
    return {
        "paper": {"tflops": [8.5, 1.5], "prefill_ms_a100": [30.3, 9.2], "activations_gb": [4.1, 0.49],
                  "total_memory_gb": [22.2, 14.4]},
        "formula": {"tflops": [full["TFLOPs"], rc["TFLOPs"]],
                    "activations_gb": [full["activations (GiB)"] * 2**30 / 1e9, rc["activations (GiB)"] * 2**30 / 1e9],
                    "weights_kv_activations_gb": [full["weights + KV + activations (GiB)"] * 2**30 / 1e9,
                                                  rc["weights + KV + activations (GiB)"] * 2**30 / 1e9],
                    "roofline_prefill_ms_a100": [roofline[576], roofline[58]]},
        "assumptions": f"{cost.LLAVA_TEXT_TOKENS} text tokens; A100 80 GB at 312 TFLOP/s and 2.0 TB/s; "
                       "the prefill reads every weight once",
    }


# ---------------------------------------------------------------- launches

LAUNCH_SIZES = ((1, 576), (16, 576), (1, 2880), (16, 2880))  # (B, N): LLaVA-1.5's grid, and 5x it
LAUNCH_WIDTH = 64  # channels: the counts do not depend on them, and the big sizes stay quick


def launch_rows(methods: tuple[str, ...], sizes=LAUNCH_SIZES, device="cpu") -> list[dict]:
    """Aten ops and host syncs of one ``compress`` call (:mod:`rclib.launches`) per method, size, budget (64, and
    adaptive for the methods that choose K) and with the value checks on and off; after one uncounted call."""
    rows = []
    for batch, n in sizes:
        inputs = llava_like_inputs(batch, n, LAUNCH_WIDTH, device=device)
        for method in before_llm(methods):
            spec = METHODS[method]
            budgets = (None,) if not spec.takes_budget else (64, None) if spec.adaptive else (64,)
            for budget in budgets:
                for checks in (True, False):
                    call = partial(compress, *inputs, method=method, budget=budget, check_values=checks)
                    try:
                        call()
                    except ValueError:  # a method that refuses this grid (pool: not a square)
                        continue
                    counted = count_ops(call)[1]
                    rows.append({"method": method, "budget": ADAPTIVE if budget is None else budget, "batch": batch,
                                 "n_tokens": n, "checks": checks, "aten_ops": counted.total,
                                 "host_syncs": counted.syncs})
    return rows


# ---------------------------------------------------------------- the run

def run_speed(config: SpeedConfig, progress=print) -> dict:
    """Every section; returns the results dict (see the module docstring)."""
    device = config.torch_device
    check_memory(config)
    results = {"machine": machine_info(device), "config": {**asdict(config), "shapes": asdict(config.shapes)}}
    progress("compression step, B = 1, one thread ...")
    results["compress"] = compress_rows(config)
    results["filters"] = filter_rows(config)
    results["filter_agreement"] = agreement_rows(config) if importable("sklearn") else []
    progress("aten ops and host syncs per compress call ...")
    results["launches"] = launch_rows(config.methods, LAUNCH_SIZES[:1] if config.quick else LAUNCH_SIZES, device)
    progress(f"building a random-weight LLaVA ({config.shapes.lm}) ...")
    model = build_llava(config.shapes, device, config.torch_dtype)
    with torch_threads(config.threads):
        results["machine"]["e2e_threads"] = torch.get_num_threads()
        progress("end to end, B = 1, every method ...")
        results["e2e"], results["released"] = e2e_rows(model, config)
        progress(f"batch scaling {config.batches} ...")
        results["batch"] = batch_rows(model, config)
    del model
    rc_e2e = next(row for row in results["e2e"] if row["method"] == "rc")
    progress("analytic cost and FLOP counts ...")
    results["cost"] = {"rows": cost_rows(mean_tokens(results, "rc")), "flop_check": flop_check_rows(config.shapes),
                       "paper": paper_check()}
    results["machine"]["load_average_after"] = load_average()
    results["summary"] = summary(results, rc_e2e)
    return results


def mean_tokens(results: dict, method: str) -> float:
    return next(row["tokens"] for row in results["compress"] if row["method"] == method)


def check_memory(config: SpeedConfig) -> None:
    """Refuse early, with what to do, when the LLM's weights cannot fit in this machine's memory."""
    need = cost.weight_bytes(replace(config.shapes.lm, bytes_per_value=config.torch_dtype.itemsize))
    if config.device == "cuda":
        free = torch.cuda.mem_get_info()[0]
    elif Path("/proc/meminfo").exists():
        free = int(re.search(r"MemAvailable:\s*(\d+)", Path("/proc/meminfo").read_text()).group(1)) * 1024
    else:
        return
    if need * 1.3 > free:
        raise ValueError(f"the {config.lm} LLM needs {need / 2**30:.1f} GiB of weights in {config.dtype} and "
                         f"{free / 2**30:.1f} GiB are free: use --lm tinyllama, --dtype bf16, or a larger machine")


# the targets: summary quantity -> (comparison, bound); measured at B = 1 (memory at memory_batch)
TARGETS = {
    "compress_rc_over_fastervlm": ("<=", 3.0),  # rc's compression step at most 3x FasterVLM's, one thread
    "peak_extra_mib_rc": ("<", 100e6 / 2**20),  # under 100 MB extra at B = 64
    "speedup_vs_released_compress": (">=", 50.0),  # RC's work at least 50x faster than the released way
    "bound_share_rc": (">=", 0.9),  # rc's total within 10% of the best any compressor with its K could reach
    "compress_share_of_vision_rc": ("<=", 0.05),  # the compression step at most 5% of the vision tower's time
}
COMPARE = {"<=": float.__le__, "<": float.__lt__, ">=": float.__ge__}


def summary(results: dict, rc_e2e: dict) -> dict:
    """The headline numbers (B = 1) and whether each target is met."""
    compress_ms = {row["method"]: row["ms"] for row in results["compress"]}
    full_e2e = next(row for row in results["e2e"] if row["method"] == "full")
    released_row = next((row for row in results["e2e"] if row["method"] == RELEASED_WAY), None)
    has_fastervlm = "fastervlm" in compress_ms
    out = {
        "compress_ms_rc": compress_ms["rc"],
        "compress_ms_fastervlm": compress_ms["fastervlm"] if has_fastervlm else None,
        "compress_rc_over_fastervlm": compress_ms["rc"] / compress_ms["fastervlm"] if has_fastervlm else None,
        "peak_extra_mib_rc": next(row["peak_extra_mib"] for row in results["compress"] if row["method"] == "rc"),
        "memory_batch": results["config"]["memory_batch"],
        "bound_share_rc": rc_e2e["bound_share"],
        "compress_share_of_vision_rc": rc_e2e["compress_share_of_vision"],
        "speedup_vs_released_compress": results["released"].get("speedup"),
        "speedup_vs_released_without_second_forward": results["released"].get("speedup_without_second_forward"),
        "speedup_vs_released_total": released_row["total_s"] / rc_e2e["total_s"] if released_row else None,
        "total_s_full": full_e2e["total_s"], "total_s_rc": rc_e2e["total_s"],
        "speedup_rc_vs_full_total": full_e2e["total_s"] / rc_e2e["total_s"],
        "tokens_rc": rc_e2e["tokens"],
    }
    out["targets_met"] = {name: out[name] is not None and COMPARE[op](float(out[name]), bound)
                          for name, (op, bound) in TARGETS.items()}
    return out


# ---------------------------------------------------------------- writing

def table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table, numbers through :func:`fmt`."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(fmt(value) for value in row) + " |" for row in rows])


def markdown(results: dict) -> str:
    """The tables of a results dict, as Markdown."""
    m, s, config = results["machine"], results["summary"], results["config"]
    lm = "toy (--quick)" if config["quick"] else config["lm"]
    lines = [f"# rclib speed on {m['device'] if m['device'] != 'cpu' else m['cpu']}", "",
             f"{m['cores']} cores, {m['memory_gib']} GiB; torch {m['torch']}, transformers {m['transformers']}, "
             f"{config['dtype']}; {m['date']}; load average before {m['load_average_1_5_15']}, after "
             f"{m['load_average_after']}. Times on the {config['clock']} clock; end to end on {m['e2e_threads']} "
             f"thread(s), LLM {lm}, "
             f"{config['new_tokens']} new tokens, median of {config['repeats']} runs after a warm-up.", "",
             "## Summary (B = 1)", ""]
    lines += table(["quantity", "value", "target", "met"],
                   [[name, value, " ".join(map(fmt, TARGETS[name])) if name in TARGETS else "",
                     s["targets_met"].get(name, "")] for name, value in s.items() if name != "targets_met"])
    lines += ["", "## Compression step (N = 576, C = 1024, one thread)", ""]
    lines += table(["method", "ms (B = 1, median)", "ms (min)", "tokens", f"extra MiB at B = {config['memory_batch']}",
                    "GPU kernels"],
                   [[r["method"], r["ms"], r["ms_min"], r["tokens"], r["peak_extra_mib"],
                     "-" if r["kernel_launches"] is None else r["kernel_launches"]] for r in results["compress"]])
    lines += ["", "Filters alone (median, min): "
              + ", ".join(f"{r['filter']} {fmt(r['ms'])}, {fmt(r['ms_min'])} ms" for r in results["filters"]) + "."]
    lines += ["", f"## Kernel launches: aten ops / host syncs per compress call (C = {LAUNCH_WIDTH})", ""]
    sizes = list(dict.fromkeys((r["batch"], r["n_tokens"]) for r in results.get("launches", [])))
    cells = {(r["method"], r["budget"], r["checks"], r["batch"], r["n_tokens"]): f"{r['aten_ops']} / {r['host_syncs']}"
             for r in results.get("launches", [])}
    lines += table(["method", "budget", "checks"] + [f"B = {b}, N = {n}" for b, n in sizes],
                   [[*key, *(cells[(*key, *size)] for size in sizes)]
                    for key in dict.fromkeys(k[:3] for k in cells)])
    lines += ["", "## End to end, B = 1 (seconds)", ""]
    lines += table(["method", "tokens", "vision", "text", "compress", "prefill", "decode tok/s", "total", "bound",
                    "bound share"],
                   [[r["method"], r["tokens"], r["vision_s"], r["text_s"], r["compress_s"], r["prefill_s"],
                     r["decode_tokens_per_s"], r["total_s"], r["bound_s"], r["bound_share"]] for r in results["e2e"]])
    released = results["released"]
    if "speedup" in released:
        lines += ["", f"RC's work after the shared vision forward (B = 1): rclib {fmt(1e3 * released['rclib_s'])} ms, "
                  f"the released way {fmt(1e3 * released['released_s'])} ms ({fmt(released['speedup'])}x): its second "
                  f"vision forward {fmt(1e3 * released['released_second_forward_s'])} ms, then its scores, filters and "
                  f"loop {fmt(1e3 * released['released_rest_s'])} ms "
                  f"({fmt(released['speedup_without_second_forward'])}x rclib's)."]
    lines += ["", "## Batch scaling", ""]
    lines += table(["method", "batch", "images/s", "total s", "tokens per sample"],
                   [[r["method"], r["batch"], r["images_per_s"], r["total_s"], r["tokens_per_sample"]]
                    for r in results["batch"]])
    lines += ["", f"## Analytic prefill cost ({cost.LLAVA_TEXT_TOKENS} text tokens, fp16)", ""]
    lines += table(["model", "setting", "prunes", "mean image tokens", "TFLOPs", "KV cache MiB", "activations GiB"],
                   [[r["model"], r["setting"], r["prunes"], r["mean_image_tokens"], r["TFLOPs"], r["KV cache (MiB)"],
                     r["activations (GiB)"]] for r in results["cost"]["rows"]])
    lines += [""] + table(["FLOPs: formula vs FlopCounterMode", "tokens", "formula TFLOPs", "counted TFLOPs", "ratio"],
                          [[r["model"], r["tokens"], r["formula_tflops"], r["flop_counter_tflops"], r["ratio"]]
                           for r in results["cost"]["flop_check"]])
    if results["filter_agreement"]:
        lines += ["", "## LOF count agreement with scikit-learn", ""]
        lines += table(["scores", "dtype", "same count", "mean abs diff", "max"],
                       [[r["scores"], r["dtype"], f"{r['same_count']:.1%}", r["mean_abs_diff"], r["max_abs_diff"]]
                        for r in results["filter_agreement"]])
    return "\n".join(lines) + "\n"


def fmt(value) -> str:
    """A float with three significant figures; anything else as str() writes it."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_results(results: dict, out: Path) -> tuple[Path, Path]:
    """``speed-<machine>.json`` and ``speed-<machine>.md`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    config = results["config"]
    stem = ("speed-" + machine_name(results["machine"]) + ("-cpu-clock" if config["clock"] == "cpu" else "")
            + ("-quick" if config["quick"] else ""))
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    write_json(json_path, results)
    with atomic_file(md_path, encoding="utf-8") as file:
        file.write(markdown(results))
    return json_path, md_path


def cmd_speed(args) -> None:
    config = SpeedConfig(device=args.device, dtype=args.dtype, clock=args.clock, lm=args.lm, threads=args.threads,
                         repeats=args.repeats, batches=tuple(args.batches), new_tokens=args.new_tokens,
                         methods=tuple(args.methods), quick=args.quick)
    results = run_speed(config)
    json_path, md_path = write_results(results, Path(args.out))
    print(md_path.read_text().split("## Compression step")[0])
    print(f"wrote {json_path} and {md_path}")


def add_command(subparsers) -> None:
    """Add the ``speed`` sub-command to an argparse sub-parser set (``rclib speed``)."""
    defaults = SpeedConfig.__dataclass_fields__
    sp = subparsers.add_parser("speed", help="benchmark: compression step, end to end vs the bound, the released "
                               "code's way, batch scaling, analytic cost")
    sp.add_argument("--out", default=str(DEFAULT_OUT), help="folder for speed-<machine>.json and .md")
    sp.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    sp.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    sp.add_argument("--clock", default="wall", choices=list(CLOCKS), help="wall: elapsed time; cpu: this thread's "
                    "CPU time on one thread, which other processes on a busy machine do not inflate")
    sp.add_argument("--lm", default="tinyllama", choices=list(cost.ARCHS), help="the end-to-end model's LLM shape")
    sp.add_argument("--threads", type=int, default=None, help="torch threads end to end (default: torch's)")
    sp.add_argument("--repeats", type=int, default=defaults["repeats"].default)
    sp.add_argument("--batches", type=int, nargs="+", default=list(defaults["batches"].default))
    sp.add_argument("--new-tokens", type=int, default=defaults["new_tokens"].default)
    sp.add_argument("--methods", nargs="+", default=list(BENCH_METHODS), choices=list(BENCH_METHODS),
                    help="methods to time (full and rc always run: the summary needs them)")
    sp.add_argument("--quick", action="store_true", help="toy shapes, one repeat: a smoke test of the runner")
    sp.set_defaults(run=cmd_speed)
