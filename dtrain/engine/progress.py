"""What rank 0 shows while training: a tqdm bar with ETA in a terminal, plain lines otherwise.

Plain lines (every train.log_every_iters) are what a batch job's log file wants; a bar full of
carriage returns is not. Other ranks show nothing.
"""

from __future__ import annotations

import sys
import time

from dtrain.engine.meters import format_duration


class Progress:
    def __init__(self, *, total_steps: int, start_step: int, enabled: bool, log_every: int,
                 stream=None) -> None:
        self.total = total_steps
        self.start_step = start_step
        self.enabled = enabled
        self.log_every = max(1, log_every)
        self.stream = stream or sys.stdout
        self.started = time.perf_counter()
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="it", dynamic_ncols=True,
                            file=self.stream)

    def eta_seconds(self, step: int) -> float:
        done = step - self.start_step
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self.started) / done * (self.total - step)

    def update(self, step: int, epoch: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(epoch=epoch, loss=f"{values.get('loss', float('nan')):.4f}",
                                 lr=f"{values.get('lr', 0):.4g}", refresh=False)
            return
        if step % self.log_every and step != self.total:
            return
        eta = self.eta_seconds(step)
        self.write(
            f"epoch {epoch} step {step}/{self.total} loss {values.get('loss', float('nan')):.4f} "
            f"lr {values.get('lr', 0):.4g} {values.get('img_per_s', 0):.1f} img/s "
            f"eta {format_duration(eta) if eta == eta else '?'}"
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
