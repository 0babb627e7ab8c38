"""Small helpers for timing tables: the machine header and a median timer."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["cpu_name", "machine_header", "median_ms"]


def machine_header(device: str = "cpu") -> str:
    """One line naming the date, processor, threads and versions, for the top of a table."""
    if device.startswith("cuda") and torch.cuda.is_available():
        where = torch.cuda.get_device_name(torch.device(device))
    else:
        where = cpu_name()
    return (
        f"{datetime.date.today().isoformat()} · {where} · {torch.get_num_threads()} threads · "
        f"torch {torch.__version__} · Python {platform.python_version()}{_load()}"
    )


def _load() -> str:
    """' · load 1.9 on 2 cores' (the 1-minute load average: times from a busy machine are
    slower than its idle speed), or '' where the system does not tell."""
    try:
        return f" · load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except (AttributeError, OSError):
        return ""


def cpu_name() -> str:
    """The processor's model name."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_ms(
    function: Callable[[], object], *, repeats: int = 5, warmup: int = 1, device: str = "cpu"
) -> float:
    """Median wall time of `function()` in milliseconds (synchronising CUDA around each call)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        function()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        sync()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)
