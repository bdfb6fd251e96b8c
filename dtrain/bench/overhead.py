"""`dtrain bench overhead`: the whole loop iteration of `dtrain train` against a bare torch loop.

dtrain's side is a real Trainer built through dtrain.builders (the public API) and run with
`Trainer.run()`: every iteration does what a training step of `dtrain train` does (lr from the
schedule, the engine's forward/backward/step, the StepSync record and its all_reduce at sync
points, metric recording, progress, preemption and save-policy checks). Only the data is
special: one synthetic batch, in memory on the device, handed out again and again by a loader
that notes the time of each hand-out; an iteration is the time between two hand-outs.

The timed window starts and ends right after a sync point (train.sync_every = the timed
iterations, the warm-up a multiple of it), so on a GPU the device has finished the window's
work when the window closes, as CUDA events give it for the bare loop.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time

import torch

from dtrain import models
from dtrain.bench.runs import ModelSetup, Timing, TrainStep, synthetic_batch
from dtrain.bench.timing import Measurement, cpu_seconds, measure
from dtrain.builders import build_trainer
from dtrain.distributed.context import DistContext
from dtrain.resolve import load_config


class StampedBatches:
    """A train loader of one batch, `length` per epoch, stamping wall and CPU time at chosen hand-outs."""

    def __init__(self, batch, length: int, cpu_at: tuple[int, int]) -> None:
        self.batch, self.length, self.cpu_at = batch, length, cpu_at
        self.stamps: list[float] = []
        self.cpu: dict[int, float] = {}
        self.skip = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.skip = skip_batches

    def __iter__(self):
        for _ in range(self.length - self.skip):
            index = len(self.stamps)
            if index in self.cpu_at:
                self.cpu[index] = cpu_seconds()
            self.stamps.append(time.perf_counter())
            yield self.batch


def _config(setup: ModelSetup, run_dir: str, total: int, sync_every: int, device: torch.device):
    recipe = "digits_resnet20" if models.info(setup.name).family == "cifar" else "resnet18"
    return load_config(recipe, [
        f"model.name={setup.name}", f"model.num_classes={setup.num_classes}", f"train.amp={setup.amp}",
        f"train.channels_last={str(setup.channels_last).lower()}", f"train.compile={str(setup.compile).lower()}",
        f"train.device={device.type}", f"train.sync_every={sync_every}", f"train.log_every_iters={sync_every}",
        "data.loader=synthetic", f"optim.batch_size={setup.batch_size}", "optim.lr=0.01", "optim.grad_accum=1",
        f"schedule.max_iters={total}", "eval.every_epochs=0", "eval.every_iters=0", "checkpoint.every_iters=0",
        "checkpoint.every_minutes=0", "checkpoint.at_epoch_end=false", "checkpoint.resume=never",
        "tracking.backend=none", f"run_dir={run_dir}"])


def time_dtrain_loop(setup: ModelSetup, device: torch.device, timing: Timing) -> Measurement:
    """One repeat: `timing.iterations` iterations of `dtrain train`'s loop, after the warm-up."""
    every = timing.iterations
    warmup = -(-max(timing.warmup, 1) // every) * every  # a multiple of the sync interval
    first, last = warmup, warmup + timing.iterations
    batches = StampedBatches(synthetic_batch(setup, device), last + 1, cpu_at=(first, last))
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = _config(setup, run_dir, total=last + 1, sync_every=every, device=device)
        torch.manual_seed(0)
        trainer = build_trainer(cfg, DistContext(device=device), setup.batch_size, stream=io.StringIO(),
                                loaders=(batches, []))
        trainer.run()
    seconds = batches.stamps[last] - batches.stamps[first]
    images = setup.batch_size * timing.iterations
    per_cpu = images / max(batches.cpu[last] - batches.cpu[first], 1e-9)
    return Measurement("dtrain", images / seconds, [round(images / seconds, 1)], setup.batch_size,
                       timing.iterations, {"images_per_cpu_second": round(per_cpu, 1)})


def bench_overhead(setup: ModelSetup, device: torch.device, timing: Timing) -> list[Measurement]:
    """dtrain's loop iteration against the bare loop, same model and batch; measured alternately,
    repeat by repeat, so machine load hits both alike."""
    images, labels = synthetic_batch(setup, device)
    bare = TrainStep(setup, device)
    results: dict[str, list[Measurement]] = {"bare": [], "dtrain": []}
    for _ in range(timing.repeats):
        results["bare"].append(measure("bare", lambda: bare(images, labels), batch_size=setup.batch_size,
                                       device=device, warmup=timing.warmup, iterations=timing.iterations, repeats=1))
        results["dtrain"].append(time_dtrain_loop(setup, device, timing))
    merged = []
    for name, runs in results.items():
        rates = [r.images_per_s for r in runs]
        per_cpu = statistics.median(r.details["images_per_cpu_second"] for r in runs)
        merged.append(Measurement(f"step:{name}", statistics.median(rates), [round(r, 1) for r in rates],
                                  setup.batch_size, timing.iterations,
                                  {**setup.details(), "images_per_cpu_second": per_cpu}))
    merged[1].details["ratio_to_bare"] = round(merged[1].images_per_s / merged[0].images_per_s, 4)
    merged[1].details["ratio_to_bare_cpu_time"] = round(
        merged[1].details["images_per_cpu_second"] / merged[0].details["images_per_cpu_second"], 4)
    return merged
