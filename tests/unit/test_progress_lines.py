"""Progress lines show the lr of their own step (never a mean over the window, a value the
schedule may never have had) and say what the loss and img/s figures average."""

from __future__ import annotations

import io
import re

import torch

from dtrain.engine.progress import Progress
from dtrain.engine.reporting import StepReporter
from dtrain.engine.step_sync import SyncResult
from dtrain.tracking import NullTracker


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _report(stream: io.StringIO, lrs: dict[int, float], losses: dict[int, float], log_every: int = 50) -> None:
    total = max(lrs)
    progress = Progress(total_steps=total, start_step=0, enabled=True, log_every=log_every, stream=stream)
    reporter = StepReporter(tracker=NullTracker(), progress=progress, device=torch.device("cpu"), global_batch=8,
                            metrics_every=10, log_every=log_every, iters_per_epoch=total)
    for first in range(1, total + 1, 10):  # a sync every 10 steps, as the loop's StepSync does
        steps = list(range(first, first + 10))
        for step in steps:
            reporter.note_step(step, lrs[step], 0.0, started=0.0)
        reporter.report(SyncResult(steps=steps, losses=[losses[s] for s in steps], top1_errs=[0.5] * 10), total)
    progress.close()


def test_a_line_shows_its_steps_lr_and_names_the_steps_the_loss_averages() -> None:
    # A step schedule: 0.1, then 0.01 from step 31 (R1's /10), and a loss of step/100.
    lrs = {step: 0.1 if step <= 30 else 0.01 for step in range(1, 101)}
    losses = {step: step / 100 for step in lrs}
    log = io.StringIO()
    _report(log, lrs, losses)
    first, second = log.getvalue().splitlines()
    assert first.startswith("epoch 0 step 50/100 loss 0.2550 ") and "(mean of steps 1-50)" in first
    assert re.search(r" lr 0\.01 ", first), first  # step 50's lr; the window's mean was 0.046
    assert second.startswith("epoch 1 step 100/100 loss 0.7550 ") and "(mean of steps 51-100) lr 0.01 " in second


def test_the_bar_shows_the_current_lr_and_the_window_it_averages() -> None:
    lrs = {step: 0.1 * (1 - step / 50) for step in range(1, 41)}  # a decaying lr: every step differs
    terminal = _Terminal()
    _report(terminal, lrs, {step: 1.0 for step in lrs}, log_every=25)
    final = terminal.getvalue().rsplit("\r", 1)[-1]
    assert "lr=0.02" in final, final  # step 40's own lr (the mean of steps 26-40 is 0.033)
    assert "loss(mean 15)=1.0000" in final  # steps 26-40, since the boundary at 25
