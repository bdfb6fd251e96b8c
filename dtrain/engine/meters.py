"""Running means of training metrics between two reports, and the memory figure."""

from __future__ import annotations

import resource
import sys
from collections import defaultdict

import torch


class MetricWindow:
    """Means of named values over a window of iterations (reset after every report)."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def add(self, **values: float) -> None:
        for name, value in values.items():
            self._sums[name] += float(value)
            self._counts[name] += 1

    def __len__(self) -> int:
        return max(self._counts.values(), default=0)

    def means(self) -> dict[str, float]:
        return {name: self._sums[name] / self._counts[name] for name in self._sums}

    def reset(self) -> None:
        self._sums.clear()
        self._counts.clear()


def memory_mib(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS bytes, Linux KiB


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
