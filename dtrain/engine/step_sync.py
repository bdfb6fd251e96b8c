"""The loop's only synchronisation point: one packed all_reduce every `train.sync_every` steps.

Between sync points a step makes no collective of dtrain's own and never waits for the device
(no .item(), float() or .cpu()): each step's loss and training error are copied into slots of
a device buffer. At a sync point the buffer, with this rank's preemption flag and rank 0's
"checkpoint minutes are up" flag, is summed over ranks in ONE all_reduce and read back in ONE
host transfer. Every rank gets the same numbers, so every rank takes the same decisions:

    slots [0, n)              loss of each step since the last sync  -> global mean per step
    slots [every, every + n)  training top-1 error of each step       -> global mean per step
    slot  2 * every           preemption requested on some rank       -> sum > 0
    slot  2 * every + 1       rank 0's clock says a timed save is due -> sum > 0

Non-finite detection stays exact: NaN/Inf survive the sum, so the first non-finite slot names
the step that went bad, even though training ran on to the sync point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from dtrain.distributed.context import DistContext


@dataclass
class SyncResult:
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # global mean loss of each step
    top1_errs: list[float] = field(default_factory=list)
    first_bad_step: int | None = None  # the first step whose global loss is NaN/Inf
    preempt: bool = False
    save_time: bool = False


class StepSync:
    def __init__(self, ctx: DistContext, every: int) -> None:
        self.ctx, self.every = ctx, max(1, every)
        self.buffer = torch.zeros(2 * self.every + 2, dtype=torch.float64, device=ctx.device)
        self.steps: list[int] = []
        self.collectives = 0  # all_reduce calls made, for tests and benchmarks
        self.host_syncs = 0  # device -> host reads made

    def record(self, step: int, loss: torch.Tensor, top1_err: torch.Tensor) -> None:
        """Keep step `step`'s (this rank's) loss and error on the device: no sync."""
        slot = len(self.steps)
        self.buffer[slot].copy_(loss.detach(), non_blocking=True)
        self.buffer[self.every + slot].copy_(top1_err.detach(), non_blocking=True)
        self.steps.append(step)

    def due(self, step: int, *, force: bool = False) -> bool:
        """A sync point: every `every` steps, when the buffer is full, or when the caller needs
        agreed numbers now (before a checkpoint, an evaluation, the last step)."""
        return bool(self.steps) and (force or step % self.every == 0 or len(self.steps) >= self.every)

    def sync(self, *, preempt: bool, save_time: bool) -> SyncResult:
        """The collective: call it on every rank at the same steps (decided by `due`)."""
        count, world = len(self.steps), self.ctx.world_size
        self.buffer[-2] = 1.0 if preempt else 0.0
        self.buffer[-1] = 1.0 if save_time and self.ctx.is_main else 0.0
        if self.ctx.is_distributed:
            dist.all_reduce(self.buffer)
            self.collectives += 1
        values = self.buffer.tolist()
        self.host_syncs += 1
        losses = [v / world for v in values[:count]]
        result = SyncResult(steps=list(self.steps), losses=losses,
                            top1_errs=[v / world for v in values[self.every:self.every + count]],
                            preempt=values[-2] > 0, save_time=values[-1] > 0)
        result.first_bad_step = next((s for s, v in zip(self.steps, losses, strict=True) if not math.isfinite(v)), None)
        self.buffer.zero_()
        self.steps.clear()
        return result
