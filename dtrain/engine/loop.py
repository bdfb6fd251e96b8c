"""The Trainer: optimiser steps over epochs until the schedule's end, with evaluation, checkpoints,
preemption, a NaN/Inf guard, AMP and tracking.

Symmetry rule (no deadlock): every rank takes every decision from numbers every rank has (the
step count, all-reduced values, rank 0's broadcast clock in SavePolicy), so all ranks enter the
same collectives in the same order. Only rank 0 writes checkpoints and talks to the tracker.

Each optimiser step, in order: lr from the schedule -> forward/backward over grad_accum
micro-batches (DDP averages gradients) -> all-reduced loss checked for NaN/Inf -> optimiser step
-> evaluation if due -> checkpoint if due -> preemption check. The state saved after step k is
therefore "k steps done", and a resume continues at step k+1 with the loader skipping the batches
of the epoch already consumed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dtrain.checkpoint import PREEMPTED_EXIT_CODE, CheckpointManager, PreemptionHandler, SavePolicy
from dtrain.config import RunConfig, dump_yaml
from dtrain.distributed.context import DistContext
from dtrain.distributed.failure import SymmetricError
from dtrain.distributed.wrap import unwrap, wrap
from dtrain.engine.evaluate import EvalResult, evaluate
from dtrain.engine.lr_schedule import build_schedule, scaled_lr
from dtrain.engine.meters import MetricWindow, memory_mib
from dtrain.engine.optimizer import build_optimizer, set_lr
from dtrain.engine.precision import maybe_compile, prepare_model, setup_precision
from dtrain.engine.progress import Progress
from dtrain.engine.state import Position, build_state, restore_state
from dtrain.errors import ConfigError, DtrainError
from dtrain.tracking import (MetricAggregator, build_tracker, header_line, local_devices, record_models,
                             record_run_start)

# Test-only hook for the checkpoint tests: with DTRAIN_TEST_CRASH_AT_STEP=k in the environment the
# process hard-exits (os._exit(1), no cleanup, like a killed node) right after step k's optimiser
# step. Never set it in real runs.
TEST_CRASH_ENV = "DTRAIN_TEST_CRASH_AT_STEP"
# Test-only hook for the failure tests: DTRAIN_TEST_RAISE_AT="RANK:STEP" raises a RuntimeError on
# that rank only, after that step (a bug on one process). Never set it in real runs.
TEST_RAISE_ENV = "DTRAIN_TEST_RAISE_AT"


def _test_raise_at(rank: int) -> int:
    spec = os.environ.get(TEST_RAISE_ENV, "")
    if not spec:
        return 0
    target_rank, _, step = spec.partition(":")
    return int(step) if int(target_rank) == rank else 0


class NonFiniteLossError(SymmetricError):
    """The all-reduced loss is NaN/Inf: every rank sees it at the same step."""


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
    steps = cfg.schedule.max_iters if cfg.schedule.max_iters is not None else cfg.schedule.epochs * iters_per_epoch
    if cfg.train.max_epochs_override is not None:
        steps = min(steps, cfg.train.max_epochs_override * iters_per_epoch)
    return steps


class Trainer:
    def __init__(self, cfg: RunConfig, ctx: DistContext, model: nn.Module, train_loader, eval_loader,
                 *, stream=None) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.train_loader, self.eval_loader = train_loader, eval_loader
        self.stream = stream
        self.run_dir = cfg.resolved_run_dir()
        self.precision = setup_precision(cfg.train, ctx.device)
        self.model = wrap(prepare_model(model, cfg.train, ctx.device), cfg.distributed, ctx)
        self.bare = unwrap(self.model)  # after sync BN conversion: what is saved and evaluated
        self.forward_model = maybe_compile(self.model, cfg.train)
        self.optimizer = build_optimizer(self.bare, cfg.optim)
        self.accum = cfg.optim.grad_accum
        self.iters_per_epoch = len(train_loader) // self.accum
        if self.iters_per_epoch < 1:
            raise ConfigError(
                f"an epoch holds {len(train_loader)} batches per process, fewer than optim.grad_accum="
                f"{self.accum}: lower optim.batch_size or optim.grad_accum"
            )
        self.total_steps = total_steps(cfg, self.iters_per_epoch)
        self.global_batch = cfg.optim.batch_size
        self.schedule = build_schedule(cfg.schedule, scaled_lr(cfg.optim), self.total_steps)
        self.checkpoints = CheckpointManager(cfg.resolved_checkpoint_dir(), keep_last=cfg.checkpoint.keep_last,
                                             keep_best=cfg.checkpoint.keep_best, rank=ctx.rank)
        self.policy = SavePolicy(cfg.checkpoint)
        self.preemption = PreemptionHandler()
        self.position = Position()
        self.tracker = None
        self.aggregate = MetricAggregator(max(1, cfg.tracking.metrics_every_iters),
                                          reductions={"train/lr": "last", "train/memory_mib": "max"})
        self.window = MetricWindow()  # for the progress lines

    # -- set-up ----------------------------------------------------------------------------------

    def _resume(self) -> None:
        mode = self.cfg.checkpoint.resume
        if mode == "never":
            # A fresh run among an earlier run's checkpoints would have its own deleted by
            # retention (the old ones sort newer); never lose either run's files.
            earlier = self.checkpoints.checkpoints()
            if earlier:
                raise SymmetricError(  # every rank sees the same directory
                    f"checkpoint.resume=never, but {self.checkpoints.directory} holds an earlier run's "
                    f"checkpoints (newest {earlier[-1][1].name}); choose a new run_dir or checkpoint.dir, "
                    "or resume with checkpoint.resume=auto")
            return
        if mode in ("auto", "force"):  # force: auto despite changed settings (checkpoint.fingerprint)
            found = self.checkpoints.load_latest()
            if found is None:
                return
            state, path = found
        else:
            path = Path(mode)
            if not path.is_file():
                raise DtrainError(f"checkpoint.resume={mode}: no such file; use auto, never or a checkpoint path")
            state = self.checkpoints.load(path)
        self.position = restore_state(state, cfg=self.cfg, model=self.bare, optimizer=self.optimizer,
                                      schedule=self.schedule, scaler=self.precision.scaler,
                                      rank=self.ctx.rank, world_size=self.ctx.world_size, path=path)
        self._resume_run_id = state.get("tracker_run_id")

    def _start_tracking(self) -> None:
        cfg = self.cfg
        self.tracker = build_tracker(cfg.tracking, run_dir=self.run_dir, rank=self.ctx.rank,
                                     run_name=cfg.tracking.run_name or cfg.recipe,
                                     resume_run_id=getattr(self, "_resume_run_id", None))
        if not self.ctx.is_main:
            return
        config_yaml = dump_yaml(cfg)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(config_yaml)
        record_run_start(self.tracker, cfg, world_size=self.ctx.world_size,
                         resumed_at_step=None if self.position.resumed_from is None else self.position.step,
                         extra_tags={"model": cfg.model.name, "global_batch": str(self.global_batch),
                                     "backend": str(self.ctx.backend or "none"), "device_type": self.ctx.device.type})

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        started = time.perf_counter()
        self._resume()
        self._start_tracking()
        progress = Progress(total_steps=self.total_steps, start_step=self.position.step,
                            enabled=self.ctx.is_main, log_every=self.cfg.train.log_every_iters,
                            stream=self.stream)
        progress.write(header_line(world_size=self.ctx.world_size, run_dir=self.run_dir, devices=local_devices(),
                                   run_link=self.tracker.run_link))
        if self.position.resumed_from is not None:
            progress.write(f"resumed from {self.position.resumed_from} at step {self.position.step} "
                           f"(epoch {self.position.epoch}, batch {self.position.batches_done})")
        self.preemption.install()
        status = "FAILED"
        try:
            stopped, final = self._train(progress)
            result = TrainResult(step=self.position.step, epoch=self.position.epoch, final=final,
                                 stopped=stopped,
                                 exit_code=PREEMPTED_EXIT_CODE if stopped == "preempted" else 0,
                                 last_checkpoint=self.position.last_checkpoint, run_id=self.tracker.run_id,
                                 run_dir=self.run_dir, seconds=time.perf_counter() - started,
                                 run_link=self.tracker.run_link)
            self._report_final(result)
            status = "KILLED" if stopped == "preempted" else "FINISHED"
        finally:
            progress.close()
            self.preemption.uninstall()
            self.tracker.close(status)
        return result

    def _train(self, progress: Progress) -> tuple[str, EvalResult | None]:
        pos = self.position
        last_eval: EvalResult | None = None
        if pos.step >= self.total_steps:
            return "finished", self._run_eval(progress)
        crash_at = int(os.environ.get(TEST_CRASH_ENV, "0") or 0)
        raise_at = _test_raise_at(self.ctx.rank)
        usable_batches = self.iters_per_epoch * self.accum
        while True:
            self.train_loader.set_epoch(pos.epoch, skip_batches=pos.batches_done)
            batches = iter(self.train_loader)
            while pos.batches_done < usable_batches:
                step_started = time.perf_counter()
                micro = [next(batches) for _ in range(self.accum)]
                data_time = time.perf_counter() - step_started
                lr = self.schedule.lr_at(pos.step, pos.epoch)
                set_lr(self.optimizer, lr)
                loss, top1_err = self._step(micro)
                pos.step += 1
                pos.batches_done += self.accum
                if crash_at and pos.step == crash_at:
                    os._exit(1)  # see TEST_CRASH_ENV
                if raise_at and pos.step == raise_at:
                    raise RuntimeError(f"simulated failure on rank {self.ctx.rank} at step {pos.step} ({TEST_RAISE_ENV})")
                epoch_finished = pos.batches_done >= usable_batches
                if epoch_finished:
                    pos.epoch, pos.batches_done = pos.epoch + 1, 0
                self._record(pos.step, pos.epoch, loss, top1_err, lr, data_time, step_started, progress)
                evaluated = None
                if self._eval_due(pos.step, pos.epoch, epoch_finished):
                    evaluated = last_eval = self._run_eval(progress)
                last = pos.step >= self.total_steps
                if last and evaluated is None:
                    evaluated = last_eval = self._run_eval(progress)
                saved_now = self.policy.should_save(pos.step, epoch_end=epoch_finished) or last
                if saved_now:
                    self._save(evaluated)
                if self.preemption.any_rank_requested():
                    if not saved_now:
                        self._save(evaluated)
                    self.ctx.barrier()  # every rank waits for rank 0's write before exiting
                    progress.write(f"preempted ({self.preemption.signal_name or 'signal on another rank'}): checkpoint "
                                   f"{pos.last_checkpoint} written at step {pos.step}; rerun to resume")
                    return "preempted", last_eval
                if last:
                    return "finished", last_eval
                if epoch_finished:
                    break
            del batches

    def _step(self, micro: list) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step over grad_accum micro-batches; returns the global mean loss and
        the training top-1 error of this step's batches (this rank)."""
        device, precision = self.ctx.device, self.precision
        loss_sum = torch.zeros((), device=device)
        wrong = torch.zeros((), device=device)
        seen = 0
        for index, (images, labels) in enumerate(micro):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if precision.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            sync_now = index == len(micro) - 1 or not hasattr(self.model, "no_sync")
            with (contextlib.nullcontext() if sync_now else self.model.no_sync()):
                with precision.context():
                    logits = self.forward_model(images)
                    loss = F.cross_entropy(logits.float(), labels) / len(micro)
                if precision.scaler is not None:
                    precision.scaler.scale(loss).backward()
                else:
                    loss.backward()
            loss_sum += loss.detach()
            wrong += (logits.detach().argmax(dim=1) != labels).sum()
            seen += labels.numel()
        global_loss = self.ctx.all_reduce_sum(loss_sum.clone()) / self.ctx.world_size
        loss_value = float(global_loss)
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            last = self.position.last_checkpoint
            raise NonFiniteLossError(
                f"loss is {loss_value} at step {self.position.step + 1} (epoch {self.position.epoch}); "
                f"training stopped before the optimiser step. Last good checkpoint: "
                f"{last if last else 'none written yet'}. Lower optim.lr or check the data"
            )
        if precision.scaler is not None:
            precision.scaler.step(self.optimizer)
            precision.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return global_loss, 100.0 * wrong / max(seen, 1)

    # -- bookkeeping -----------------------------------------------------------------------------

    def _record(self, step, epoch, loss, top1_err, lr, data_time, step_started, progress) -> None:
        seconds = max(time.perf_counter() - step_started, 1e-9)
        values = {"train/loss": loss, "train/top1_err": top1_err, "train/lr": lr,
                  "train/img_per_s": self.global_batch / seconds, "train/data_time": data_time,
                  "train/memory_mib": memory_mib(self.ctx.device)}
        window = self.aggregate.add(step, values)
        if window is not None:
            self.tracker.log_metrics(window, step=step)
        self.window.add(loss=float(loss), lr=lr, img_per_s=self.global_batch / seconds)
        if step % max(1, self.cfg.train.log_every_iters) == 0 or step == self.total_steps or progress.bar is not None:
            progress.update(step, epoch, self.window.means())
            if progress.bar is None:
                self.window.reset()

    def _eval_due(self, step: int, epoch: int, epoch_finished: bool) -> bool:
        every_iters, every_epochs = self.cfg.eval.every_iters, self.cfg.eval.every_epochs
        if every_iters > 0:
            return step % every_iters == 0
        return epoch_finished and every_epochs > 0 and epoch % every_epochs == 0

    def _run_eval(self, progress: Progress) -> EvalResult:
        result = evaluate(self.bare, self.eval_loader, self.ctx, autocast=self.precision.autocast,
                          channels_last=self.precision.channels_last)
        pos = self.position
        if self.schedule.observe(result.top1_err):
            progress.write(f"validation error plateaued: lr lowered to {self.schedule.lr_at(pos.step, pos.epoch):.4g}")
        if pos.best_top1_err is None or result.top1_err < pos.best_top1_err:
            pos.best_top1_err = result.top1_err
        pos.history.append({"step": pos.step, "epoch": pos.epoch, "top1_err": result.top1_err,
                            "top5_err": result.top5_err})
        self.tracker.log_metrics({**result.as_metrics(), "train/epoch": pos.epoch}, step=pos.step)
        progress.write(f"step {pos.step} epoch {pos.epoch}: val top-1 err {result.top1_err:.2f}% "
                       f"top-5 err {result.top5_err:.2f}% ({result.samples} images)")
        return result

    def _save(self, evaluated: EvalResult | None) -> None:
        state = build_state(cfg=self.cfg, model=self.bare, optimizer=self.optimizer, schedule=self.schedule,
                            scaler=self.precision.scaler, position=self.position,
                            tracker_run_id=self.tracker.run_id if self.tracker else None)
        metric = evaluated.top1_err if evaluated is not None else None
        self.position.last_checkpoint = self.checkpoints.save(state, self.position.step, metric=metric)
        self.policy.mark_saved()
        self.tracker.flush()

    def _report_final(self, result: TrainResult) -> None:
        """RUN_DIR/final_metrics.json (rank 0), logged as an artifact, and final/* metrics."""
        if not self.ctx.is_main:
            return
        final = result.final
        data = {"recipe": self.cfg.recipe, "model": self.cfg.model.name, "step": result.step,
                "epoch": result.epoch, "stopped": result.stopped,
                "top1_err": final.top1_err if final else None, "top5_err": final.top5_err if final else None,
                "best_top1_err": self.position.best_top1_err, "world_size": self.ctx.world_size,
                "global_batch": self.global_batch, "seconds": round(result.seconds, 2),
                "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
                "run_id": result.run_id}
        path = self.run_dir / "final_metrics.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        self.tracker.log_artifact(path)
        # The final evaluation is the last val/ point; no "final/" metrics, whose single-point
        # charts would sort before the training curves in MLflow's UI.
        if self.position.best_top1_err is not None:
            self.tracker.log_metrics({"val/best_top1_err": self.position.best_top1_err}, step=result.step)
        record_models(self.tracker, self.cfg, self.bare, last_checkpoint=result.last_checkpoint,
                      best_checkpoint=self.checkpoints.best_path if self.cfg.checkpoint.keep_best else None,
                      with_models=result.stopped == "finished")
