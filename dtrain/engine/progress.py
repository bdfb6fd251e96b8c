"""What rank 0 shows while training: a tqdm bar with ETA in a terminal, plain lines otherwise.

Plain lines (every train.log_every_iters) are what a batch job's log file wants; a bar full of
carriage returns is not. Other ranks show nothing. A line shows the loss and img/s averaged over
the steps since the last line (it says which) and the lr of its own step:

    epoch 3 step 1550/6250 loss 1.2345 812.4 img/s (mean of steps 1501-1550) lr 0.1 eta 0:41:07
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

from dtrain.engine.meters import format_duration


class Progress:
    def __init__(self, *, total_steps: int, start_step: int, enabled: bool, log_every: int,
                 stream: TextIO | None = None) -> None:
        self.total = total_steps
        self.start_step = start_step
        self.enabled = enabled
        self.log_every = max(1, log_every)
        self.stream = stream or sys.stdout
        self.started = time.perf_counter()
        self.bar: tqdm | None = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(total=total_steps, initial=start_step, unit="it", dynamic_ncols=True,
                            file=self.stream)

    def eta_seconds(self, step: int) -> float:
        done = step - self.start_step
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self.started) / done * (self.total - step)

    def update(self, step: int, epoch: int, values: dict[str, float], averaged_steps: int = 1) -> None:
        """values: `loss` and `img_per_s` are means over the last `averaged_steps` steps (ending at
        `step`), `lr` is the lr of `step` itself (a mean of a schedule is a value it never had)."""
        if not self.enabled:
            return
        loss, lr = values.get("loss", float("nan")), values.get("lr", 0)
        averaged_steps = max(1, averaged_steps)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix({"epoch": epoch, f"loss(mean {averaged_steps})": f"{loss:.4f}", "lr": f"{lr:.4g}"},
                                 refresh=False)
            return
        if step % self.log_every and step != self.total:
            return
        eta = self.eta_seconds(step)
        first = step - averaged_steps + 1
        steps = f"step {step}" if first == step else f"steps {first}-{step}"
        self.write(
            f"epoch {epoch} step {step}/{self.total} loss {loss:.4f} {values.get('img_per_s', 0):.1f} img/s "
            f"(mean of {steps}) lr {lr:.4g} eta {format_duration(eta) if eta == eta else '?'}"
        )

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
