"""When to checkpoint: every N iterations, every M minutes, at epoch ends (CheckpointConfig).

The deadlock this avoids: saving gathers the RNG state of every rank (a collective), so every
rank must decide to save at the same step. Step counts agree everywhere, but clocks do not; if
rank 0 decided "30 minutes passed" one step before rank 1 did, the ranks would wait in different
collectives forever. So the step and epoch rules (`count_due`) are answered locally, while the
minute rule (`time_due`) is only this process's opinion: the training loop sends rank 0's answer
to every rank in its step-sync all_reduce (dtrain/engine/step_sync.py), at steps all ranks know.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dtrain.config import CheckpointConfig


class SavePolicy:
    def __init__(self, cfg: CheckpointConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_iters = cfg.every_iters
        self.every_seconds = cfg.every_minutes * 60.0
        self.at_epoch_end = cfg.at_epoch_end
        self.clock = clock
        self.last_save_time = clock()

    def count_due(self, step: int, epoch_end: bool = False) -> bool:
        """The step- and epoch-based rules: every rank knows the answer without asking."""
        return (self.every_iters > 0 and step % self.every_iters == 0) or (epoch_end and self.at_epoch_end)

    def time_due(self, now: float | None = None) -> bool:
        """This process's clock says checkpoint.every_minutes have passed since the last save.
        Local: ranks may disagree; use rank 0's answer (the loop's StepSync carries it)."""
        if self.every_seconds <= 0:
            return False
        now = self.clock() if now is None else now
        return now - self.last_save_time >= self.every_seconds

    def mark_saved(self, now: float | None = None) -> None:
        """Restart the minute timer (call it on every rank at every save)."""
        self.last_save_time = self.clock() if now is None else now
