"""The Trainer: optimiser steps over epochs until the schedule's end, with evaluation, checkpoints,
preemption, a NaN/Inf guard and tracking, over any Engine (dtrain/engine/engine.py).

Symmetry rule (no deadlock): every rank takes every decision from numbers every rank has (the
step count, the StepSync's all-reduced buffer), so all ranks enter the same collectives in the
same order. Only rank 0 writes checkpoint files and talks to the tracker.

Each optimiser step, in order: lr from the schedule -> forward/backward over grad_accum
micro-batches -> optimiser step -> weight EMA update if due (dtrain/engine/ema.py) -> (at a sync
point: one all_reduce of losses and flags; stop on NaN/Inf naming the step) -> evaluation if due
(of the EMA too) -> checkpoint if due -> preemption. The state
saved after step k is "k steps done"; a resume continues at step k+1 with the loader skipping the
batches of the epoch already consumed. The last step is checkpointed before the final evaluation.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

import torch

from dtrain.checkpoint import PREEMPTED_EXIT_CODE, CheckpointManager, PreemptionHandler, SavePolicy
from dtrain.checkpoint.manager import BEST_EMA_NAME
from dtrain.config import RunConfig, to_dict
from dtrain.data.batch_mix import BatchAugment
from dtrain.data.loaders import EvalBatch
from dtrain.distributed.context import DistContext
from dtrain.distributed.failure import SymmetricError
from dtrain.engine.ema import EMA_PART, WeightEma
from dtrain.engine.engine import Engine
from dtrain.engine.evaluate import EvalResult, evaluate
from dtrain.engine.loss import LossFn, build_loss, hard_labels
from dtrain.engine.lr_schedule import build_schedule, scaled_lr
from dtrain.engine.progress import Progress
from dtrain.engine.reporting import StepReporter
from dtrain.engine.state import (
    Position,
    RngPart,
    TrackerPart,
    check_model_name,
    explain_fresh_start,
    find_resume_checkpoint,
)
from dtrain.engine.step_sync import StepSync, SyncResult
from dtrain.errors import ConfigError
from dtrain.tracking import NullTracker, Tracker, header_line, local_devices, record_models

# Test-only hook for the checkpoint tests: with DTRAIN_TEST_CRASH_AT_STEP=k in the environment the
# process hard-exits (os._exit(1), no cleanup, like a killed node) right after step k's optimiser
# step. Never set it in real runs.
TEST_CRASH_ENV = "DTRAIN_TEST_CRASH_AT_STEP"
# Test-only hook for the failure tests: DTRAIN_TEST_RAISE_AT="RANK:STEP" raises a RuntimeError on
# that rank only, after that step (a bug on one process). Never set it in real runs.
TEST_RAISE_ENV = "DTRAIN_TEST_RAISE_AT"


def _test_hooks(rank: int, step: int) -> None:
    if step == int(os.environ.get(TEST_CRASH_ENV, "0") or 0):
        os._exit(1)  # see TEST_CRASH_ENV
    target_rank, _, at = os.environ.get(TEST_RAISE_ENV, "").partition(":")
    if at and int(target_rank) == rank and int(at) == step:
        raise RuntimeError(f"simulated failure on rank {rank} at step {step} ({TEST_RAISE_ENV})")


class NonFiniteLossError(SymmetricError):
    """The all-reduced loss is NaN/Inf: every rank sees it at the same sync point."""

    exit_code = 1  # a training failure, not a user error


@dataclass
class TrainResult:
    step: int
    epoch: int
    final: EvalResult | None
    stopped: str  # "finished" | "preempted"
    exit_code: int
    last_checkpoint: Path | None
    run_id: str | None
    run_dir: Path
    seconds: float
    run_link: str | None = None  # how to open the MLflow run (URL, or `mlflow ui` + URL)


def total_steps(cfg: RunConfig, iters_per_epoch: int) -> int:
    """schedule.max_iters wins over schedule.epochs; train.max_epochs_override caps either."""
    if cfg.schedule.max_iters is not None:
        steps = cfg.schedule.max_iters
    elif cfg.schedule.epochs is not None:
        steps = cfg.schedule.epochs * iters_per_epoch
    else:  # validation refuses this already; a Trainer built from an unvalidated config says the same
        raise ConfigError("set schedule.epochs or schedule.max_iters: the run needs an end")
    if cfg.train.max_epochs_override is not None:
        steps = min(steps, cfg.train.max_epochs_override * iters_per_epoch)
    return steps


Batch = tuple[torch.Tensor, torch.Tensor]  # images, labels


class TrainBatches(Protocol):
    """A training loader as the loop uses it (every registered loader's train side)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None: ...


# (cfg, ctx, *, resume_run_id, resumed_at) -> the run's tracker (builders.start_tracker)
StartTracker = Callable[..., Tracker]


def train_step(engine: Engine, micro: Sequence[Batch], device: torch.device,
               loss_fn: LossFn) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step over grad_accum micro-batches: this rank's mean loss and top-1 error
    (%) as device tensors. Labels are class indices or target distributions (dtrain.engine.loss).
    Nothing here waits for the device."""
    loss_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device)
    seen = 0
    for index, (images, labels) in enumerate(micro):
        boundary = index == len(micro) - 1  # its backward synchronises the step's gradients
        labels = labels.to(device, non_blocking=True)
        logits = engine.forward(images, boundary=boundary)
        loss = loss_fn(logits, labels)
        engine.backward(loss, boundary=boundary)
        loss_sum += loss.detach() / len(micro)
        wrong += (logits.detach().argmax(dim=1) != hard_labels(labels)).sum()
        seen += labels.shape[0]
    engine.step()
    engine.zero_grad()
    return loss_sum, 100.0 * wrong / max(seen, 1)


class Trainer:
    """Trains `engine` on `train_loader`; `checkpoints` (the run's CheckpointManager) saves and
    restores the engine's parts together with the loop's own."""

    def __init__(self, cfg: RunConfig, ctx: DistContext, engine: Engine, train_loader: TrainBatches,
                 eval_loader: Iterable[EvalBatch], checkpoints: CheckpointManager, *, start_tracker: StartTracker,
                 stream: TextIO | None = None) -> None:
        self.cfg, self.ctx, self.engine = cfg, ctx, engine
        self.train_loader, self.eval_loader = train_loader, eval_loader
        self.start_tracker, self.stream = start_tracker, stream
        self.run_dir = cfg.resolved_run_dir()
        self.accum = cfg.optim.grad_accum
        self.iters_per_epoch = len(train_loader) // self.accum
        if self.iters_per_epoch < 1:
            raise ConfigError(f"an epoch holds {len(train_loader)} batches per process, fewer than optim.grad_accum="
                              f"{self.accum}: lower optim.batch_size or optim.grad_accum")
        self.total_steps = total_steps(cfg, self.iters_per_epoch)
        self.schedule = build_schedule(cfg.schedule, scaled_lr(cfg.optim), self.total_steps, self.iters_per_epoch)
        self.loss_fn = build_loss(cfg.loss)
        self.position, self.tracker_part = Position(), TrackerPart()
        self.ema = WeightEma(engine.model, cfg.ema) if cfg.ema.enabled else None
        self.checkpoints = checkpoints
        self.checkpoints.register({  # restored in this order: RNG last (the EMA after the model it may copy)
            **engine.parts(), **({EMA_PART: self.ema} if self.ema else {}),
            "lr_schedule": self.schedule, "train_state": self.position,
            "tracker": self.tracker_part,
            "rng": RngPart(rank=ctx.rank, world_size=ctx.world_size, seed=cfg.train.seed, position=self.position)})
        self.policy = SavePolicy(cfg.checkpoint)
        self.preemption = PreemptionHandler()
        self.sync = StepSync(ctx, cfg.train.sync_every or cfg.train.log_every_iters)
        self.batch_augment = BatchAugment(cfg.augment, num_classes=cfg.model.num_classes, seed=cfg.train.seed,
                                          rank=ctx.rank, world_size=ctx.world_size)
        self.tracker: Tracker = NullTracker()  # the run's own once run() has resumed (it needs the run id)
        self._reporter: StepReporter | None = None
        self.last_eval: EvalResult | None = None
        self.last_eval_ema: EvalResult | None = None  # of the EMA weights, at the same evaluation
        self.last_eval_step = -1

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        started = time.perf_counter()
        self._resume()
        pos = self.position
        self.tracker = self.start_tracker(self.cfg, self.ctx, resume_run_id=self.tracker_part.run_id,
                                          resumed_at=pos.step if pos.resumed_from else None)
        self.tracker_part.run_id = self.tracker.run_id
        progress = Progress(total_steps=self.total_steps, start_step=pos.step, enabled=self.ctx.is_main,
                            log_every=self.cfg.train.log_every_iters, stream=self.stream)
        self._reporter = StepReporter(tracker=self.tracker, progress=progress, device=self.ctx.device,
                                      global_batch=self.cfg.optim.batch_size,
                                      metrics_every=self.cfg.tracking.metrics_every_iters,
                                      log_every=self.cfg.train.log_every_iters, iters_per_epoch=self.iters_per_epoch)
        progress.write(header_line(world_size=self.ctx.world_size, run_dir=self.run_dir, devices=local_devices(),
                                   run_link=self.tracker.run_link, backend=self.ctx.backend,
                                   tracking_problem=self.tracker.problem))
        if pos.resumed_from is not None:
            progress.write(f"resumed from {pos.resumed_from} at step {pos.step} "
                           f"(epoch {pos.epoch}, batch {pos.batches_done})")
        self.preemption.install()
        status = "FAILED"
        try:
            stopped = self._train(progress)
            self.checkpoints.wait()
            result = TrainResult(step=pos.step, epoch=pos.epoch, final=self.last_eval, stopped=stopped,
                                 exit_code=PREEMPTED_EXIT_CODE if stopped == "preempted" else 0,
                                 last_checkpoint=pos.last_checkpoint, run_id=self.tracker.run_id,
                                 run_dir=self.run_dir, seconds=time.perf_counter() - started,
                                 run_link=self.tracker.run_link)
            self._report_final(result)
            status = "KILLED" if stopped == "preempted" else "FINISHED"
        finally:
            progress.close()
            self.preemption.uninstall()
            self.tracker.close(status)
        return result

    def _train(self, progress: Progress) -> str:
        pos = self.position
        if pos.step >= self.total_steps:
            return "finished" if self._evaluate(progress, final=True) else self._preempted(progress, saved=True)
        while True:
            epoch = pos.epoch
            self.train_loader.set_epoch(epoch, skip_batches=pos.batches_done)
            batches = iter(self.train_loader)
            while pos.epoch == epoch:  # _one_step moves on to the next epoch after its last step
                stopped = self._one_step(batches, progress)
                if stopped:
                    return stopped
            del batches

    @property
    def reporter(self) -> StepReporter:
        if self._reporter is None:
            raise RuntimeError("the step reporter exists only while Trainer.run() runs")
        return self._reporter

    def _one_step(self, batches: Iterator[Batch], progress: Progress) -> str | None:
        """One optimiser step and what is due after it; "finished"/"preempted" to stop."""
        pos, started = self.position, time.perf_counter()
        micro = [next(batches) for _ in range(self.accum)]
        data_time = time.perf_counter() - started
        # Erasing and mixing on the device, keyed by (seed, step, micro-batch): no global RNG draw.
        micro = [self.batch_augment(images, labels, step=pos.step, micro=i)
                 for i, (images, labels) in enumerate(micro)]
        lr = self.schedule.lr_at(pos.step, pos.epoch)
        self.engine.set_lr(lr)
        loss, top1_err = train_step(self.engine, micro, self.ctx.device, self.loss_fn)
        pos.step += 1
        if self.ema is not None and self.ema.due(pos.step):
            self.ema.update(pos.epoch)
        pos.batches_done += self.accum
        _test_hooks(self.ctx.rank, pos.step)
        epoch_finished = pos.batches_done >= self.iters_per_epoch * self.accum
        if epoch_finished:
            pos.epoch, pos.batches_done = pos.epoch + 1, 0
        self.sync.record(pos.step, loss, top1_err)
        self.reporter.note_step(pos.step, lr, data_time, started)
        last = pos.step >= self.total_steps
        eval_due = self._eval_due(pos.step, pos.epoch, epoch_finished) and not last
        save_due = self.policy.count_due(pos.step, epoch_end=epoch_finished) or last
        synced = None
        if self.sync.due(pos.step, force=eval_due or save_due):
            synced = self._sync_point()
            save_due = save_due or synced.save_time
        if eval_due and self._evaluate(progress) is None:
            return self._preempted(progress, saved=False)
        if save_due:
            self._save(blocking=last)
        if synced is not None and synced.preempt:
            return self._preempted(progress, saved=save_due)
        if last:  # the final checkpoint is on disk before the final evaluation starts
            return "finished" if self._evaluate(progress, final=True) else self._preempted(progress, saved=True)
        return None

    def _sync_point(self) -> SyncResult:
        synced = self.sync.sync(preempt=self.preemption.requested, save_time=self.policy.time_due())
        self.reporter.report(synced, self.total_steps)
        bad = synced.first_bad_step
        if bad is not None and not self.engine.tolerates_non_finite:
            loss = synced.losses[synced.steps.index(bad)]
            last = self.checkpoints.latest_written()
            raise NonFiniteLossError(
                f"loss is {loss} at step {bad} (epoch {(bad - 1) // self.iters_per_epoch}); training stopped "
                f"at step {self.position.step} without saving. Last good checkpoint: "
                f"{last if last else 'none written yet'}. Lower optim.lr or check the data")
        # R1's warm-up criterion is decided here, from numbers every rank has, at no extra sync
        # (lr_schedule.WarmupCriterion): every rank switches at the same step.
        if self.schedule.observe_training(self.position.step, synced.top1_errs):
            self.reporter.progress.write(f"step {self.position.step}: running training error below "
                                         f"{self.cfg.schedule.warmup_until_err:g}%: warm-up over, lr "
                                         f"{self.schedule.lr_at(self.position.step, self.position.epoch):.4g}")
        return synced

    def _eval_due(self, step: int, epoch: int, epoch_finished: bool) -> bool:
        every_iters, every_epochs = self.cfg.eval.every_iters, self.cfg.eval.every_epochs
        if every_iters > 0:
            return step % every_iters == 0
        return epoch_finished and every_epochs > 0 and epoch % every_epochs == 0

    def _evaluate(self, progress: Progress, final: bool = False) -> EvalResult | None:
        """Errors on the validation split; None when a preemption signal stopped it."""
        errors_of = functools.partial(evaluate, eval_loader=self.eval_loader, ctx=self.ctx,
                                      autocast=self.engine.eval_context(), channels_last=self.engine.channels_last,
                                      should_stop=self.preemption.any_rank_requested)
        result = errors_of(self.engine.model)
        ema = errors_of(self.ema.model) if self.ema is not None and result is not None else None
        if result is None or (self.ema is not None and ema is None):
            return None
        pos = self.position
        if self.schedule.observe(result.top1_err):
            progress.write(f"validation error plateaued: lr lowered to {self.schedule.lr_at(pos.step, pos.epoch):.4g}")
        if pos.best_top1_err is None or result.top1_err < pos.best_top1_err:
            pos.best_top1_err = result.top1_err
        pos.history.append({"step": pos.step, "epoch": pos.epoch, "top1_err": result.top1_err,
                            "top5_err": result.top5_err, **(ema.as_metrics("", "_ema") if ema else {})})
        self.tracker.log_metrics({**result.as_metrics(), **(ema.as_metrics(suffix="_ema") if ema else {}),
                                  "train/epoch": pos.epoch}, step=pos.step)
        progress.write(f"step {pos.step} epoch {pos.epoch}: val top-1 err {result.top1_err:.2f}% "
                       f"top-5 err {result.top5_err:.2f}% ({result.samples} images)"
                       + (f"; EMA {ema.top1_err:.2f}% / {ema.top5_err:.2f}%" if ema else ""))
        if ema is not None and (pos.best_top1_err_ema is None or ema.top1_err < pos.best_top1_err_ema):
            pos.best_top1_err_ema = ema.top1_err
        if final:  # the final checkpoint was written before this evaluation: it may now become best.pt
            self.checkpoints.record_metric(pos.step, result.top1_err)
            if ema is not None:
                self.checkpoints.record_metric(pos.step, ema.top1_err, best=BEST_EMA_NAME)
        self.last_eval, self.last_eval_ema, self.last_eval_step = result, ema, pos.step
        return result

    def _save(self, *, blocking: bool) -> None:
        pos, directory = self.position, self.checkpoints.directory
        extra = {"config": to_dict(self.cfg)}
        shards = self.engine.save_shards(directory, f"step-{pos.step}")
        if shards is not None:
            extra[self.cfg.distributed.engine] = shards

        def prune() -> None:  # rank 0, once the checkpoint file (the commit marker) is on disk
            self.engine.prune_shards(directory, {f"step-{step}" for step, _ in self.checkpoints.checkpoints()})

        evaluated_now = self.last_eval_step == pos.step
        metric = self.last_eval.top1_err if self.last_eval and evaluated_now else None
        ema = self.last_eval_ema if evaluated_now else None
        pos.last_checkpoint = self.checkpoints.save_parts(
            pos.step, metric=metric, extra=extra, blocking=blocking, on_written=prune,
            other_bests={BEST_EMA_NAME: ema.top1_err} if ema else None)
        self.policy.mark_saved()
        self.tracker.flush()

    def _preempted(self, progress: Progress, *, saved: bool) -> str:
        if not saved:
            self._save(blocking=True)
        self.checkpoints.wait()
        self.ctx.barrier()  # every rank waits for rank 0's write before exiting
        pos = self.position
        progress.write(f"preempted ({self.preemption.signal_name or 'signal on another rank'}): checkpoint "
                       f"{pos.last_checkpoint} written at step {pos.step}; rerun to resume")
        return "preempted"

    def _resume(self) -> None:
        with explain_fresh_start(self.cfg):  # a checkpoint that cannot be continued says how to start afresh
            found = find_resume_checkpoint(self.cfg, self.checkpoints)
            if found is None:
                return
            state, path = found
            if self.ema is not None:
                state.setdefault(EMA_PART, None)  # written without EMA: the average starts from these weights
            self.checkpoints.restore(check_model_name(state, self.cfg, path), path)
            self.engine.load_shards(path.parent, f"step-{self.position.step}", path)
        self.position.resumed_from = self.position.last_checkpoint = path

    def _report_final(self, result: TrainResult) -> None:
        """RUN_DIR/final_metrics.json (rank 0), logged as an artifact, and final/* metrics."""
        if not self.ctx.is_main:
            return
        final = result.final
        data = {"recipe": self.cfg.recipe, "model": self.cfg.model.name, "step": result.step,
                "epoch": result.epoch, "stopped": result.stopped,
                "top1_err": final.top1_err if final else None, "top5_err": final.top5_err if final else None,
                "best_top1_err": self.position.best_top1_err, "world_size": self.ctx.world_size,
                **({"top1_err_ema": self.last_eval_ema.top1_err if self.last_eval_ema else None,
                    "best_top1_err_ema": self.position.best_top1_err_ema} if self.ema else {}),
                "global_batch": self.cfg.optim.batch_size, "seconds": round(result.seconds, 2),
                "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
                "run_id": result.run_id}
        path = self.run_dir / "final_metrics.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        self.tracker.log_artifact(path)
        # The final evaluation is the last val/ point; no "final/" metrics, whose single-point
        # charts would sort before the training curves in MLflow's UI.
        bests = {"val/best_top1_err": self.position.best_top1_err,
                 "val/best_top1_err_ema": self.position.best_top1_err_ema}
        if any(value is not None for value in bests.values()):
            self.tracker.log_metrics({k: v for k, v in bests.items() if v is not None}, step=result.step)
        record_models(self.tracker, self.cfg, self.engine.model, last_checkpoint=result.last_checkpoint,
                      best_checkpoint=self.checkpoints.best_path if self.cfg.checkpoint.keep_best else None,
                      with_models=result.stopped == "finished")
