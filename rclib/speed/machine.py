"""The machine ``rclib speed`` runs on: what it is (for the record and the file name), its load, whether the
model fits in its memory, which optional packages it has."""
from __future__ import annotations

import os
import platform
import re
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from rclib import cost
from rclib.speed.config import SpeedConfig


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


def importable(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None
