"""Timing: CUDA events on a GPU (the work is asynchronous), perf_counter on CPU; warm-up
iterations excluded; the median of repeats is the figure, the spread is reported beside it."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from dtrain.bench.machine import machine_environment
from dtrain.bench.processes import descendants


@dataclass
class Measurement:
    name: str
    images_per_s: float  # median over repeats
    repeats_images_per_s: list[float]
    batch_size: int
    iterations: int  # timed iterations per repeat
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def time_iterations(step: Callable[[], None], *, device: torch.device, warmup: int, iterations: int,
                    repeats: int) -> list[float]:
    """Seconds of `iterations` calls of step(), `repeats` times, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            for _ in range(iterations):
                step()
            end.record()
            end.synchronize()
            seconds.append(start.elapsed_time(end) / 1000.0)
        else:
            began = time.perf_counter()
            for _ in range(iterations):
                step()
            seconds.append(time.perf_counter() - began)
    return seconds


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, its threads and its live child processes
    (torch DataLoader workers): the denominator of "images per core-second", which, unlike
    img/s, barely moves with the load other users put on a shared machine. Linux only."""
    if not Path("/proc/self/stat").exists():
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in [os.getpid(), *descendants(os.getpid())]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def measure(name: str, step: Callable[[], None], *, batch_size: int, device: torch.device, warmup: int,
            iterations: int, repeats: int, **details) -> Measurement:
    for _ in range(warmup):
        step()
    cpu_before = cpu_seconds()
    seconds = time_iterations(step, device=device, warmup=0, iterations=iterations, repeats=repeats)
    images = batch_size * iterations
    rates = [images / s for s in seconds]
    details["images_per_cpu_second"] = round(images * repeats / max(cpu_seconds() - cpu_before, 1e-9), 1)
    return Measurement(name, statistics.median(rates), [round(r, 1) for r in rates], batch_size, iterations, details)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict:
    """What a figure needs beside it: device, versions, and the machine (commit, date, load, quiet)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "device": str(device), "device_name": name, "torch_threads": torch.get_num_threads(),
        **machine_environment(),
        "versions": {p: _version(p) for p in ("torch", "nvidia-dali-cuda120", "nvidia-dali-cuda130", "ffcv",
                                              "numpy", "pillow")},
    }
