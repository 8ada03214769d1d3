"""How ``rclib speed`` measures a call: a synchronised clock, turns between calls, peak memory, GPU kernels,
the torch thread count."""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from rclib.models.compressed import timed


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
    """Times calls on one clock, the device synchronised on both ends (``rclib.models.compressed.timed``)."""

    device: torch.device
    clock: Callable[[], float] = time.perf_counter  # a value of rclib.speed.config.CLOCKS

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
