"""What a compression call costs a GPU: aten ops (about one kernel launch each) and host syncs, on any device.

At LLaVA's sizes a GPU pays per kernel launch (5-10 us each) and per host sync (the queue drains), not per
FLOP, and the CPU clock hides both. :func:`count_ops` runs a call under a ``TorchDispatchMode`` that tallies
every aten op and every op that makes the host wait for the device's values (``item()``, ``bool()`` and
``int()`` of a tensor, data-dependent shapes such as ``nonzero``, a copy to the CPU). The counts do not depend on
the values' precision, the channel width or the device, so they are a test, not a benchmark
(tests/core/test_launches.py). Work a method does in numpy on the host launches nothing and is not counted.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from torch.utils._python_dispatch import TorchDispatchMode

HOST_COPY = "aten._to_copy (to the host)"  # how OpCounter names a copy that reads values on the host
# ops that read a device value on the host (or size their output by the values): each one is a host sync
SYNC_OPS = frozenset({HOST_COPY, "aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique2",
                      "aten.unique_dim", "aten.unique_consecutive", "aten.repeat_interleave", "aten.equal",
                      "aten.is_nonzero"})


@dataclass(frozen=True)
class OpCount:
    """The aten ops one call dispatched, by name."""

    ops: Counter  # "aten.<op>" -> times called

    @property
    def total(self) -> int:
        """Every aten op (views and host reads included): about one kernel launch each on a GPU."""
        return sum(self.ops.values())

    @property
    def syncs(self) -> int:
        """The ops after which the host waits for the device."""
        return sum(n for name, n in self.ops.items() if name in SYNC_OPS)


def is_host_copy(source, to: dict) -> bool:
    """Whether ``_to_copy(source, **to)`` reads values on the host: a copy to the CPU from another device, or an
    explicit copy to the CPU that keeps the dtype (``.to("cpu", copy=True)``: on a CPU-only run it counts as it
    would on a GPU). A dtype conversion on the CPU (torch's own index casts) is not one."""
    device = to.get("device")
    if device is None or device.type != "cpu":
        return False
    return source.device.type != "cpu" or to.get("dtype", source.dtype) == source.dtype


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched inside ``with OpCounter() as counter:`` (``counter.ops``)."""

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name == "aten._to_copy" and is_host_copy(args[0], kwargs or {}):
            name = HOST_COPY
        self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn, *args, **kwargs) -> tuple[object, OpCount]:
    """(fn(*args, **kwargs), the ops it dispatched)."""
    with OpCounter() as counter:
        result = fn(*args, **kwargs)
    return result, OpCount(counter.ops)
