"""What a ``rclib speed`` run measures with: its settings (:class:`SpeedConfig`), the model's shapes, the clocks."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from rclib import cost
from rclib.methods import METHODS
from rclib.models.tiny import ClipShapes
from rclib.speed.instrument import Stopwatch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# "wall": elapsed time. "cpu": this thread's CPU time, with one torch thread on the CPU: the work done,
# whatever else the machine runs (time the OS gives to other processes is not counted)
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
# every method that runs without a benchmark's ground truth (the oracle needs the asked-about objects)
BENCH_METHODS = tuple(name for name, spec in METHODS.items() if "target" not in spec.needs)
QUESTION = "What is the colour of the bus in this picture? Answer the question using a single word or phrase."
DEFAULT_OUT = Path("benchmarks") / "results"  # relative to where it runs: the repository root for `make bench`
CLIP_VOCAB = 49408  # CLIP ViT-L/14's BPE vocabulary
# LLaVA-NeXT's anyres tile layouts (rows, columns) of crops: image_grid_pinpoints [[336, 672], [672, 336], [672, 672],
# [1008, 336], [336, 1008]] at 336 px
NEXT_LAYOUTS = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))
# per --model-shape: the photo's tiles (None: LLaVA-1.5's one view), with --quick, and the batch of the memory target
# (LLaVA-NeXT: a 672 x 672 photo, 2 x 2 tiles and the base view, 5 x 576 = 2,880 patch tokens)
MODEL_SHAPES = {"llava-1.5": {"tiles": None, "quick_tiles": None, "memory_batch": 64},
                "llava-next": {"tiles": (2, 2), "quick_tiles": (1, 2), "memory_batch": 16}}


@dataclass(frozen=True)
class ModelShapes:
    """The shapes of the random-weight LLaVA the end-to-end rows run (default: LLaVA-1.5's vision side; with
    ``tiles``, LLaVA-NeXT's)."""

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
    tiles: tuple[int, int] | None = None  # LLaVA-NeXT: the photo's anyres tiles (rows, columns); None: LLaVA-1.5

    @property
    def n_tokens(self) -> int:
        """Patch tokens of one photo: the base view's, and its tiles' (the photo fills them: nothing is unpadded)."""
        rows, columns = self.tiles or (0, 0)
        return (1 + rows * columns) * self.clip.n_tokens

    @property
    def photo_size(self) -> tuple[int, int]:
        """(height, width) of the random photos: LLaVA-NeXT's exactly its tiles; LLaVA-1.5's 480 x 640, which its
        processor pads to a square."""
        if self.tiles is None:
            return 480, 640
        return self.tiles[0] * self.image_size, self.tiles[1] * self.image_size

    @property
    def grid_pinpoints(self) -> list[list[int]]:
        """LLaVA-NeXT's tile layouts in pixels (its config's ``image_grid_pinpoints``)."""
        return [[rows * self.image_size, columns * self.image_size] for rows, columns in NEXT_LAYOUTS]

    @property
    def clip(self) -> ClipShapes:
        """The CLIP side, as :mod:`rclib.models.tiny` builds it: CLIP's text MLP (4x its width) and vocabulary."""
        return ClipShapes(image_size=self.image_size, patch_size=self.patch_size, vision_width=self.vision_width,
                          vision_mlp=self.vision_mlp, vision_layers=self.vision_layers, vision_heads=self.vision_heads,
                          text_width=self.text_width, text_mlp=4 * self.text_width, text_layers=self.text_layers,
                          text_heads=self.text_heads, text_vocab=CLIP_VOCAB, joint_dim=self.joint_dim)


# --quick: the whole runner at toy shapes (a smoke test, minutes become seconds)
QUICK_SHAPES = ModelShapes(image_size=112, patch_size=8, vision_width=64, vision_layers=2, vision_heads=4,
                           vision_mlp=128, text_width=32, text_layers=1, text_heads=2, joint_dim=32,
                           lm=cost.DecoderArch(layers=17, width=64, mlp_width=128, vocab=512, heads=4,
                                               kv_heads=2))  # inside-LLM methods move their layers to this depth


@dataclass
class SpeedConfig:
    device: str = "cpu"  # "cpu" or "cuda"
    dtype: str = "fp32"  # model and input dtype: fp32, fp16 or bf16
    clock: str = "wall"  # a key of CLOCKS; "cpu" runs everything on one thread
    lm: str = "tinyllama"  # the end-to-end model's LLM shape: a key of rclib.cost.ARCHS
    model_shape: str = "llava-1.5"  # a key of MODEL_SHAPES: LLaVA-1.5's one view or LLaVA-NeXT's tiles
    threads: int | None = None  # torch threads for the end-to-end rows (None: torch's default)
    repeats: int = 3  # timed end-to-end runs per row, after one warm-up (compression rows: 10x)
    batches: tuple[int, ...] = (1, 4, 16)  # batch sizes of the scaling rows
    new_tokens: int = 8  # tokens decoded per answer (forced: no early EOS)
    memory_batch: int | None = None  # batch of the compression step's memory measurement (None: the model shape's)
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
        if self.model_shape not in MODEL_SHAPES:
            raise ValueError(f"model_shape must be one of {sorted(MODEL_SHAPES)}, got {self.model_shape!r}")
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
        shape = MODEL_SHAPES[self.model_shape]
        self.memory_batch = self.memory_batch or shape["memory_batch"]
        self.shapes = (replace(QUICK_SHAPES, tiles=shape["quick_tiles"]) if self.quick
                       else ModelShapes(lm=cost.ARCHS[self.lm], tiles=shape["tiles"]))
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
