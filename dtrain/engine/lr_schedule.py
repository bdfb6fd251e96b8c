"""Learning rate per iteration: a pure function of (step, epoch, plateau state).

The loop sets the lr of every parameter group before each optimiser step from
`schedule.lr_at(step, epoch)`, so a resumed run needs only (step, epoch) and the plateau state
(`state_dict`) to continue with exactly the lr the uninterrupted run had. torch's LR schedulers
are stateful step counters that cannot take a per-iteration warm-up on top of an epoch schedule
and a plateau rule at once, so the few formulas are written here; the plateau rule copies the
semantics of `torch.optim.lr_scheduler.ReduceLROnPlateau` (mode "min", relative threshold,
patience counted in evaluations, min_lr floor).

Kinds (schedule.kind): step_epochs (R2 ImageNet: /10 at epochs 30, 60), step_iters (CIFAR: /10 at
32k and 48k iterations), plateau (R1 ImageNet: /10 when validation error stops improving),
constant, cosine. Warm-up (schedule.warmup) wraps any kind: constant (R1 ResNet-110 and R2 CIFAR:
lr 0.01 for ~400 iterations, then the schedule) or linear (from warmup_lr to the schedule's lr).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Callable
from typing import Any

from dtrain.config import OptimConfig, ScheduleConfig
from dtrain.errors import ConfigError


def scaled_lr(optim: OptimConfig) -> float:
    """optim.lr, times batch/reference_batch under the linear scaling rule (lr = 0.1 x batch/256)."""
    if optim.scale_lr:
        return optim.lr * optim.batch_size / optim.reference_batch
    return optim.lr


def keep_epochs(cfg: ScheduleConfig, batch_size: int) -> ScheduleConfig:
    """The schedule at `batch_size` that keeps the epochs of one written for schedule.iters_at_batch.

    Iteration counts (step_iters milestones, max_iters, warmup_iters) scale by
    iters_at_batch / batch_size, so batch 64 runs R2's 64k iterations at batch 128 as 128k, with the
    lr drops at the same epochs (the authors' code schedules by epoch). The result records
    iters_at_batch = batch_size, so resolving it again changes nothing."""
    reference = cfg.iters_at_batch
    if not reference or reference == batch_size:
        return cfg
    if reference <= 0:
        raise ConfigError(f"schedule.iters_at_batch must be positive, got {reference}")

    def scale(iters: int) -> int:
        return int(round(iters * reference / batch_size))

    milestones = [scale(m) for m in cfg.milestones] if cfg.kind == "step_iters" else list(cfg.milestones)
    return dataclasses.replace(cfg, milestones=milestones, iters_at_batch=batch_size,
                               max_iters=scale(cfg.max_iters) if cfg.max_iters else cfg.max_iters,
                               warmup_iters=scale(cfg.warmup_iters))


class LRSchedule:
    """Base: subclasses give `base_factor(step, epoch)`; warm-up and plateau are applied here."""

    def __init__(self, cfg: ScheduleConfig, base_lr: float, total_iters: int):
        self.cfg = cfg
        self.base_lr = base_lr
        self.total_iters = max(1, total_iters)

    def schedule_lr(self, step: int, epoch: int) -> float:
        raise NotImplementedError

    def lr_at(self, step: int, epoch: int) -> float:
        """The lr of the optimiser step number `step` (0-based) taken during epoch `epoch`."""
        lr = max(self.schedule_lr(step, epoch), self.cfg.min_lr)
        return apply_warmup(self.cfg, lr, step)

    def observe(self, val_error: float) -> bool:
        """Report a validation error; returns True if the lr was lowered (plateau only)."""
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ConstantSchedule(LRSchedule):
    def schedule_lr(self, step: int, epoch: int) -> float:
        return self.base_lr


class StepEpochsSchedule(LRSchedule):
    """lr x gamma^(number of milestones <= epoch): MultiStepLR stepped once per epoch."""

    def schedule_lr(self, step: int, epoch: int) -> float:
        return self.base_lr * self.cfg.gamma ** bisect.bisect_right(sorted(self.cfg.milestones), epoch)


class StepItersSchedule(LRSchedule):
    """lr x gamma^(number of milestones <= step): CIFAR's /10 at 32k and 48k."""

    def schedule_lr(self, step: int, epoch: int) -> float:
        return self.base_lr * self.cfg.gamma ** bisect.bisect_right(sorted(self.cfg.milestones), step)


class CosineSchedule(LRSchedule):
    def schedule_lr(self, step: int, epoch: int) -> float:
        progress = min(step / self.total_iters, 1.0)
        return self.cfg.min_lr + (self.base_lr - self.cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


class PlateauSchedule(LRSchedule):
    """R1: lr / 10 when the validation error plateaus (ReduceLROnPlateau, mode min, rel threshold)."""

    def __init__(self, cfg: ScheduleConfig, base_lr: float, total_iters: int):
        super().__init__(cfg, base_lr, total_iters)
        self.best = math.inf
        self.bad_evals = 0
        self.drops = 0

    def schedule_lr(self, step: int, epoch: int) -> float:
        return self.base_lr * self.cfg.gamma ** self.drops

    def observe(self, val_error: float) -> bool:
        if val_error < self.best * (1 - self.cfg.plateau_threshold):
            self.best = val_error
            self.bad_evals = 0
            return False
        self.bad_evals += 1
        if self.bad_evals > self.cfg.plateau_patience:
            self.bad_evals = 0
            if self.schedule_lr(0, 0) > self.cfg.min_lr:  # lr_at floors the result at min_lr
                self.drops += 1
                return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_evals": self.bad_evals, "drops": self.drops}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.bad_evals = int(state["bad_evals"])
        self.drops = int(state["drops"])


# schedule.warmup -> the lr of a step inside the warm-up (cfg, scheduled lr, step < warmup_iters).
WARMUPS: dict[str, Callable[[ScheduleConfig, float, int], float]] = {
    "none": lambda cfg, lr, step: lr,
    "constant": lambda cfg, lr, step: cfg.warmup_lr,
    "linear": lambda cfg, lr, step: cfg.warmup_lr + (lr - cfg.warmup_lr) * step / cfg.warmup_iters,
}


def apply_warmup(cfg: ScheduleConfig, lr: float, step: int) -> float:
    """Warm-up for the first warmup_iters steps: constant warmup_lr, or linear warmup_lr -> lr."""
    if step >= cfg.warmup_iters:
        return lr
    return WARMUPS[cfg.warmup](cfg, lr, step)


SCHEDULES: dict[str, Callable[[ScheduleConfig, float, int], LRSchedule]] = {
    "constant": ConstantSchedule,
    "step_epochs": StepEpochsSchedule,
    "step_iters": StepItersSchedule,
    "cosine": CosineSchedule,
    "plateau": PlateauSchedule,
}


def build_schedule(cfg: ScheduleConfig, base_lr: float, total_iters: int) -> LRSchedule:
    try:
        factory = SCHEDULES[cfg.kind]
    except KeyError:
        raise ConfigError(f"schedule.kind={cfg.kind!r} is not one of {', '.join(SCHEDULES)}") from None
    if cfg.warmup != "none" and cfg.warmup_iters <= 0:
        raise ConfigError(f"schedule.warmup={cfg.warmup} needs schedule.warmup_iters > 0")
    return factory(cfg, base_lr, total_iters)
