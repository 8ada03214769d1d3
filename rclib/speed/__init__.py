"""``rclib speed``: what compression buys, measured against the bound, the released code's way and the peers.

    rclib speed [--out benchmarks/results] [--device cpu|cuda] [--dtype fp32|fp16|bf16] [--lm tinyllama|7b|13b]
                [--model-shape llava-1.5|llava-next] [--threads N] [--repeats 3] [--batches 1 4 16]
                [--new-tokens 8] [--quick]

Writes ``speed-<machine>.json`` (machine, versions, every measured row, a ``summary``) and
``speed-<machine>.md`` (the tables) under ``--out`` (``speed-<machine>-llava-next`` for LLaVA-NeXT).
``--model-shape llava-next`` runs every section at LLaVA-NeXT's N = 2,880 tokens (a 672 x 672 photo: the base
view and 2 x 2 anyres tiles of 576 patches each) with its own targets; methods that refuse N (pool: not a
square) are left out and named in ``refused``. A benchmark, not a test: timings are medians after
a warm-up, GPU work is synchronised before every clock reading, and nothing asserts a time. Sections:

- ``compress``: every method's compression step on inputs of the model's shape (LLaVA-1.5: N = 576,
  C = 1024), B = 1 on one thread; the extra memory its call takes at B = 64 (LLaVA-NeXT: 16); on a GPU, the
  kernels it launches.
- ``launches``: the aten ops (about one GPU kernel launch each) and host syncs of one compression call per
  method at N = 576 and 2,880, B = 1 and 16, fixed and adaptive budgets, value checks on and off
  (:mod:`rclib.launches`; counts, the same on any machine).
- ``filters``: the dynamic scale filter alone, and how often its LOF count equals scikit-learn's when
  half precision makes ties (the agreement the test suite bounds).
- ``e2e``: a LLaVA-1.5-architecture model (or LLaVA-NeXT's) with random weights at real shapes (CLIP
  ViT-L/14-336 vision tower and text tower, a Llama of the ``--lm`` shape), driven through rclib's own path
  (encode, compress, splice, generate): vision, text, compression, prefill, decode, total, per method; the
  *bound* of each (the same vision and LLM time with a compressor that costs nothing); and, on LLaVA-1.5, the
  released code's way of doing RC's work (:func:`rclib.methods.released_reference.released_compress`:
  scikit-learn LOF on the host three times, a Python loop over the centres, a second vision forward for
  the text score).
- ``batch``: images per second at each batch size, all tokens vs rc, with rc's per-sample K.
- ``cost``: the analytic prefill cost (:mod:`rclib.cost`) of the 7B and 13B models with the measured model's N
  image tokens per method and K, and the formula against torch's FlopCounterMode on the measured model's shape
  and on 7B / 13B.

Modules: ``config`` (settings, shapes, clocks), ``instrument`` (timing, memory, kernels), ``machine``,
``step`` (the compression step alone: compress, filters, agreement, launches), ``model`` (the random-weight
LLaVA), ``probes`` and ``e2e`` (end to end, batch scaling), ``analytic`` (cost rows), ``report`` (targets,
summary, Markdown, files), ``cli`` (the sub-command and the run).
"""
from rclib.speed.cli import add_command, cmd_speed, run_speed
from rclib.speed.config import BENCH_METHODS, ModelShapes, SpeedConfig
from rclib.speed.e2e import add_bounds
from rclib.speed.instrument import peak_extra_bytes
from rclib.speed.machine import machine_name
from rclib.speed.report import write_results
from rclib.speed.step import LAUNCH_WIDTH, launch_rows, llava_like_inputs

__all__ = ["add_command", "cmd_speed", "run_speed", "BENCH_METHODS", "ModelShapes", "SpeedConfig", "add_bounds",
           "peak_extra_bytes", "machine_name", "write_results", "LAUNCH_WIDTH", "launch_rows", "llava_like_inputs"]
