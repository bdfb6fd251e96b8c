"""Keeps metric volume bounded: per-iteration values in, one point per window out.

A 600,000-iteration run that logged 4 metrics every iteration would write 2.4 M points; a
window of 50 writes 48,000 and the charts stay readable (see benchmarks/bench_tracking.py).
Values may be 0-dim tensors: they are summed on their device and converted with float() only
when a window is emitted, so the training loop does not synchronise every iteration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REDUCTIONS = ("mean", "last", "max")


class MetricAggregator:
    """`add(step, values)` each iteration; returns {name: value} when `step % every == 0`, else None.

    Windows are aligned to the global step, so a resumed run emits at the same steps as an
    uninterrupted one. Each metric is averaged unless `reductions` says "last" (e.g. lr) or
    "max" (e.g. memory). `pop()` emits a partial window (end of epoch, end of run).
    """

    def __init__(self, every: int, reductions: Mapping[str, str] | None = None) -> None:
        if every < 1:
            raise ValueError(f"metrics interval must be >= 1 iteration, got {every}")
        bad = {k: v for k, v in (reductions or {}).items() if v not in REDUCTIONS}
        if bad:
            raise ValueError(f"unknown reductions {bad}; use one of {', '.join(REDUCTIONS)}")
        self.every = every
        self.reductions = dict(reductions or {})
        self._values: dict[str, Any] = {}
        self._counts: dict[str, int] = {}

    def add(self, step: int, values: Mapping[str, Any]) -> dict[str, float] | None:
        for key, value in values.items():
            kind = self.reductions.get(key, "mean")
            old = self._values.get(key)
            if old is None or kind == "last":
                self._values[key] = value
            elif kind == "mean":
                self._values[key] = old + value
            else:
                self._values[key] = value if value > old else old
            self._counts[key] = self._counts.get(key, 0) + 1
        return self.pop() if step % self.every == 0 else None

    def pop(self) -> dict[str, float] | None:
        """The current window's values (None if empty), and a fresh window."""
        if not self._values:
            return None
        out = {}
        for key, value in self._values.items():
            divisor = self._counts[key] if self.reductions.get(key, "mean") == "mean" else 1
            out[key] = float(value) / divisor
        self._values.clear()
        self._counts.clear()
        return out
