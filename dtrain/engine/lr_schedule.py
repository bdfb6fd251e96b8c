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
constant, and the decays of later recipes: cosine and linear (from lr at the end of the warm-up to
min_lr at the end of the run, per iteration, like torchvision's SequentialLR of a LinearLR warm-up
then CosineAnnealingLR over the remaining epochs, and FFCV's linear ramp down). Warm-up
(schedule.warmup) wraps any kind: constant (R1 ResNet-110 and R2 CIFAR: lr 0.01, then the
schedule) or linear (from warmup_lr to the schedule's lr) for warmup_iters steps, or warmup_epochs
epochs (converted to iterations when the run's epoch length is known: build_schedule).
schedule.step_on=epoch holds each epoch at the lr of its first step (torchvision's and timm's
references call scheduler.step() once per epoch, so their warm-up and cosine are staircases);
schedule.decay_over says where a cosine/linear decay starts: at the warm-up's end (torchvision's
SequentialLR, FFCV) or at step 0 with the warm-up replacing its first steps (timm's
CosineLRScheduler with warmup_prefix=False, which RSB trained with).
A constant warm-up may instead end on R1's criterion (sec. 4.2: "0.01 ... until the training error
is below 80% (about 400 iterations)"), schedule.warmup_until_err, with warmup_iters as its cap: see
WarmupCriterion. That decision is part of the schedule's state (`state_dict`), so a resumed run
switches at the step the uninterrupted run switched at.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Callable, Sequence
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


# R1 reads "the training error" of a running run: the criterion takes the mean top-1 error of the
# last (up to) this many steps, 6,400 images at CIFAR's batch 128, rather than one noisy batch.
RUNNING_ERROR_STEPS = 50


class WarmupCriterion:
    """R1 sec. 4.2: the warm-up ends once the running training error is below
    schedule.warmup_until_err (%), at the latest after warmup_iters steps (the cap).

    Where it is decided: at the loop's sync points only (dtrain.engine.step_sync), which every rank
    reaches at the same step with the same all-reduced errors, so every rank switches at the same
    step and the loop gains no host sync (the errors live on the device between sync points). An
    on-device criterion would need the lr as a device tensor and an all-reduce per step to agree.
    The switch is therefore late by at most the sync interval (train.sync_every, or
    train.log_every_iters: 50 steps by default), and never later than the cap."""

    def __init__(self, threshold: float | None, cap: int):
        self.threshold, self.cap = threshold, cap
        self.recent: list[float] = []  # the last RUNNING_ERROR_STEPS steps' global training errors
        self.ended_at: int | None = None  # the first step after the warm-up, when the criterion met

    def end(self) -> int:
        """Steps 0..end-1 are warm-up steps."""
        return self.cap if self.ended_at is None else min(self.ended_at, self.cap)

    def observe(self, steps_done: int, top1_errs: Sequence[float]) -> bool:
        """The synced training errors of the steps up to `steps_done`; True when the warm-up ends here."""
        if self.threshold is None or self.ended_at is not None or steps_done >= self.cap:
            return False
        self.recent = (self.recent + [float(e) for e in top1_errs])[-RUNNING_ERROR_STEPS:]
        if self.recent and sum(self.recent) / len(self.recent) < self.threshold:
            self.ended_at = steps_done
            self.recent = []
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"warmup_ended_at": self.ended_at, "warmup_recent_errors": list(self.recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ended = state.get("warmup_ended_at")
        self.ended_at = None if ended is None else int(ended)
        self.recent = [float(e) for e in state.get("warmup_recent_errors", [])]


# schedule.step_on -> the step whose lr an optimiser step takes, from (step, epoch, steps per epoch).
STEP_ON: dict[str, Callable[[int, int, int], int]] = {
    "iteration": lambda step, epoch, per_epoch: step,
    "epoch": lambda step, epoch, per_epoch: epoch * per_epoch,  # the epoch's first step
}
# schedule.decay_over: where cosine/linear decay starts (DecaySchedule.progress).
DECAY_OVER = ("after_warmup", "whole_run")


class LRSchedule:
    """Base: subclasses give `schedule_lr(step, epoch)`; warm-up, plateau and step_on are applied here."""

    def __init__(self, cfg: ScheduleConfig, base_lr: float, total_iters: int, iters_per_epoch: int = 0):
        self.cfg = cfg
        self.base_lr = base_lr
        self.total_iters = max(1, total_iters)
        self.iters_per_epoch = iters_per_epoch
        self.warmup = WarmupCriterion(cfg.warmup_until_err, cfg.warmup_iters)

    def schedule_lr(self, step: int, epoch: int) -> float:
        raise NotImplementedError

    def lr_at(self, step: int, epoch: int) -> float:
        """The lr of the optimiser step number `step` (0-based) taken during epoch `epoch`."""
        step = STEP_ON[self.cfg.step_on](step, epoch, self.iters_per_epoch)
        lr = max(self.schedule_lr(step, epoch), self.cfg.min_lr)
        return apply_warmup(self.cfg, lr, step, self.warmup.end())

    def observe(self, val_error: float) -> bool:
        """Report a validation error; returns True if the lr was lowered (plateau only)."""
        return False

    def observe_training(self, steps_done: int, top1_errs: Sequence[float]) -> bool:
        """Report the synced training errors (%) of the steps since the last report, the last of
        them step `steps_done`; True when that ends the warm-up (schedule.warmup_until_err)."""
        return self.warmup.observe(steps_done, top1_errs)

    def state_dict(self) -> dict[str, Any]:
        return self.warmup.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warmup.load_state_dict(state)


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


class DecaySchedule(LRSchedule):
    """Decays from base_lr to min_lr at total_iters, starting at the end of the warm-up (step 0 without
    one, or with decay_over=whole_run); during the warm-up the scheduled lr is base_lr, the linear
    warm-up's target (timm's warm-up also climbs to the base lr, not to the cosine's value there)."""

    def progress(self, step: int) -> float:
        warmup_end = self.warmup.end() if self.cfg.warmup != "none" else 0
        if step < warmup_end:
            return 0.0
        start = warmup_end if self.cfg.decay_over == "after_warmup" else 0
        return min(max(step - start, 0) / max(self.total_iters - start, 1), 1.0)


class CosineSchedule(DecaySchedule):
    def schedule_lr(self, step: int, epoch: int) -> float:
        progress = self.progress(step)
        return self.cfg.min_lr + (self.base_lr - self.cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


class LinearDecaySchedule(DecaySchedule):
    def schedule_lr(self, step: int, epoch: int) -> float:
        return self.cfg.min_lr + (self.base_lr - self.cfg.min_lr) * (1.0 - self.progress(step))


class PlateauSchedule(LRSchedule):
    """R1: lr / 10 when the validation error plateaus (ReduceLROnPlateau, mode min, rel threshold)."""

    def __init__(self, cfg: ScheduleConfig, base_lr: float, total_iters: int, iters_per_epoch: int = 0):
        super().__init__(cfg, base_lr, total_iters, iters_per_epoch)
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
        return {**super().state_dict(), "best": self.best, "bad_evals": self.bad_evals, "drops": self.drops}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best = float(state["best"])
        self.bad_evals = int(state["bad_evals"])
        self.drops = int(state["drops"])


# schedule.warmup -> the lr of a step inside the warm-up (cfg, scheduled lr, step < warmup_iters).
WARMUPS: dict[str, Callable[[ScheduleConfig, float, int], float]] = {
    "none": lambda cfg, lr, step: lr,
    "constant": lambda cfg, lr, step: cfg.warmup_lr,
    "linear": lambda cfg, lr, step: cfg.warmup_lr + (lr - cfg.warmup_lr) * step / cfg.warmup_iters,
}


def apply_warmup(cfg: ScheduleConfig, lr: float, step: int, end: int | None = None) -> float:
    """Warm-up for steps before `end` (default warmup_iters): constant warmup_lr, or linear warmup_lr -> lr."""
    if step >= (cfg.warmup_iters if end is None else end):
        return lr
    return WARMUPS[cfg.warmup](cfg, lr, step)


SCHEDULES: dict[str, Callable[[ScheduleConfig, float, int, int], LRSchedule]] = {
    "constant": ConstantSchedule,
    "step_epochs": StepEpochsSchedule,
    "step_iters": StepItersSchedule,
    "cosine": CosineSchedule,
    "linear": LinearDecaySchedule,
    "plateau": PlateauSchedule,
}


def warmup_in_iterations(cfg: ScheduleConfig, iters_per_epoch: int | None) -> ScheduleConfig:
    """schedule.warmup_epochs as warmup_iters at this run's optimiser steps per epoch."""
    if cfg.warmup_epochs <= 0:
        return cfg
    if cfg.warmup_iters > 0:
        raise ConfigError(f"schedule.warmup_epochs={cfg.warmup_epochs} and schedule.warmup_iters={cfg.warmup_iters} "
                          "both set the warm-up's length; set one of them to 0")
    if not iters_per_epoch:
        raise ConfigError("schedule.warmup_epochs needs the run's epoch length; use schedule.warmup_iters")
    return dataclasses.replace(cfg, warmup_iters=cfg.warmup_epochs * iters_per_epoch, warmup_epochs=0)


def build_schedule(cfg: ScheduleConfig, base_lr: float, total_iters: int,
                   iters_per_epoch: int | None = None) -> LRSchedule:
    """The run's schedule; iters_per_epoch (optimiser steps per epoch) converts schedule.warmup_epochs
    and places the epochs of schedule.step_on=epoch."""
    try:
        factory = SCHEDULES[cfg.kind]
    except KeyError:
        raise ConfigError(f"schedule.kind={cfg.kind!r} is not one of {', '.join(SCHEDULES)}") from None
    cfg = warmup_in_iterations(cfg, iters_per_epoch)
    if cfg.warmup != "none" and cfg.warmup_iters <= 0:
        raise ConfigError(f"schedule.warmup={cfg.warmup} needs schedule.warmup_iters > 0 or schedule.warmup_epochs > 0")
    if cfg.warmup_until_err is not None and cfg.warmup != "constant":
        raise ConfigError(f"schedule.warmup_until_err ends a constant warm-up; set schedule.warmup=constant "
                          f"(it is {cfg.warmup}) or schedule.warmup_until_err=null")
    if cfg.step_on == "epoch" and not iters_per_epoch:
        raise ConfigError("schedule.step_on=epoch needs the run's epoch length; use schedule.step_on=iteration")
    return factory(cfg, base_lr, total_iters, iters_per_epoch or 0)
