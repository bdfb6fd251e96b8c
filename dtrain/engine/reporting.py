"""What the loop reports about training steps: tracker metrics, progress lines, the bar.

Per step only host numbers are noted (lr, data time, wall time); the device numbers (loss,
training error) arrive at sync points from the StepSync, for every step since the last one, so
reporting never makes the loop wait for the device.
"""

from __future__ import annotations

import time

import torch

from dtrain.engine.meters import MetricWindow, memory_mib
from dtrain.engine.progress import Progress
from dtrain.engine.step_sync import SyncResult
from dtrain.tracking import MetricAggregator, Tracker


class StepReporter:
    def __init__(self, *, tracker: Tracker, progress: Progress, device: torch.device, global_batch: int,
                 metrics_every: int, log_every: int, iters_per_epoch: int) -> None:
        self.tracker, self.progress, self.device = tracker, progress, device
        self.global_batch, self.log_every, self.iters_per_epoch = global_batch, max(1, log_every), iters_per_epoch
        self.aggregate = MetricAggregator(max(1, metrics_every),
                                          reductions={"train/lr": "last", "train/memory_mib": "max"})
        self.window = MetricWindow()  # for the progress lines
        self._host: dict[int, tuple[float, float, float]] = {}  # step -> (lr, data time, seconds)

    def note_step(self, step: int, lr: float, data_time: float, started: float) -> None:
        self._host[step] = (lr, data_time, max(time.perf_counter() - started, 1e-9))

    def report(self, synced: SyncResult, total_steps: int) -> None:
        memory = memory_mib(self.device)
        for step, loss, top1_err in zip(synced.steps, synced.losses, synced.top1_errs, strict=True):
            lr, data_time, seconds = self._host.pop(step, (0.0, 0.0, 1e-9))
            img_per_s = self.global_batch / seconds
            values = {"train/loss": loss, "train/top1_err": top1_err, "train/lr": lr,
                      "train/img_per_s": img_per_s, "train/data_time": data_time, "train/memory_mib": memory}
            window = self.aggregate.add(step, values)
            if window is not None:
                self.tracker.log_metrics(window, step=step)
            # Loss and img/s are means over the steps since the last line; the lr is this step's.
            self.window.add(loss=loss, img_per_s=img_per_s)
            line_due = step % self.log_every == 0 or step == total_steps
            if line_due or self.progress.bar is not None:
                self.progress.update(step, step // self.iters_per_epoch, {**self.window.means(), "lr": lr},
                                     averaged_steps=len(self.window))
            if line_due:
                self.window.reset()
