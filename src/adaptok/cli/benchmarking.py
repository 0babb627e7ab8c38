"""Small helpers for timing tables: the machine header and a median timer."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "MachineFacts",
    "cpu_name",
    "header_line",
    "machine_facts",
    "machine_header",
    "median_ms",
]


@dataclass(frozen=True)
class MachineFacts:
    """Where and when a timing was taken (what `machine_header` prints; benchmarks that write
    JSON store the fields).

    Attributes:
        date: ISO date.
        machine: the processor's model name, or the CUDA device's.
        threads: torch's CPU threads.
        torch: torch's version.
        python: Python's version.
        load: the 1-minute load average (None where the system does not tell): times from a
            busy machine are slower than its idle speed.
        cores: CPU cores (None where unknown).
    """

    date: str
    machine: str
    threads: int
    torch: str
    python: str
    load: float | None
    cores: int | None


def machine_facts(device: str = "cpu") -> MachineFacts:
    """The date, processor (or CUDA device), threads, versions and load, now."""
    if device.startswith("cuda") and torch.cuda.is_available():
        where = torch.cuda.get_device_name(torch.device(device))
    else:
        where = cpu_name()
    try:
        load: float | None = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    return MachineFacts(
        datetime.date.today().isoformat(),
        where,
        torch.get_num_threads(),
        torch.__version__,
        platform.python_version(),
        load,
        os.cpu_count(),
    )


def machine_header(device: str = "cpu") -> str:
    """One line naming the date, processor, threads and versions, for the top of a table."""
    return header_line(machine_facts(device))


def header_line(facts: MachineFacts) -> str:
    """`machine_header`'s line for given facts."""
    load = f" · load {facts.load:.1f} on {facts.cores} cores" if facts.load is not None else ""
    return (
        f"{facts.date} · {facts.machine} · {facts.threads} threads · torch {facts.torch} · "
        f"Python {facts.python}{load}"
    )


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
