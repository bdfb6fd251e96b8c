"""When to checkpoint: every N iterations, every M minutes, at epoch ends (CheckpointConfig).

The deadlock this avoids: saving gathers the RNG state of every rank (a collective), so every
rank must decide to save at the same step. Step counts agree everywhere, but clocks do not; if
rank 0 decided "30 minutes passed" one step before rank 1 did, the ranks would wait in different
collectives forever. So the minutes are measured on rank 0 only, and its decision is broadcast
at steps every rank knows in advance (multiples of `time_check_every`). Every rank must call
should_save at every step for that to hold.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.distributed as dist

from dtrain.checkpoint.signals import collective_device
from dtrain.config import CheckpointConfig


class SavePolicy:
    def __init__(
        self,
        cfg: CheckpointConfig,
        *,
        time_check_every: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_check_every < 1:
            raise ValueError("time_check_every must be >= 1")
        self.every_iters = cfg.every_iters
        self.every_seconds = cfg.every_minutes * 60.0
        self.at_epoch_end = cfg.at_epoch_end
        self.time_check_every = time_check_every
        self.clock = clock
        self.last_save_time = clock()

    def should_save(self, step: int, now: float | None = None, epoch_end: bool = False) -> bool:
        """Decide whether to checkpoint after `step` (same answer on every rank).

        A collective at every `time_check_every`-th step when the minute rule is on and a process
        group is up. A True answer restarts the minute timer (the caller is expected to save).
        """
        decision = self.count_due(step, epoch_end=epoch_end)
        if self.every_seconds > 0 and step % self.time_check_every == 0:
            decision = self._time_is_up(now) or decision
        if decision:
            self.mark_saved(now)
        return decision

    def count_due(self, step: int, epoch_end: bool = False) -> bool:
        """The step- and epoch-based rules: every rank knows the answer without asking."""
        return (self.every_iters > 0 and step % self.every_iters == 0) or (epoch_end and self.at_epoch_end)

    def time_due(self, now: float | None = None) -> bool:
        """This process's clock says the minutes are up. Local: the training loop sends rank 0's
        answer to every rank in its step-sync all_reduce (dtrain/engine/step_sync.py)."""
        if self.every_seconds <= 0:
            return False
        now = self.clock() if now is None else now
        return now - self.last_save_time >= self.every_seconds

    def mark_saved(self, now: float | None = None) -> None:
        self.last_save_time = self.clock() if now is None else now

    def _time_is_up(self, now: float | None) -> bool:
        due = self.time_due(now)
        if not (dist.is_available() and dist.is_initialized()):
            return due
        flag = torch.tensor([1 if due else 0], dtype=torch.int32, device=collective_device())
        dist.broadcast(flag, src=0)  # rank 0's clock decides for everyone
        return bool(flag.item())
