"""Preemption: SIGTERM / SIGUSR1 / SIGINT ask the run to checkpoint at the next step boundary and exit.

Ctrl-C (SIGINT) is a preemption the user asks for; a second Ctrl-C gives the previous handler
back and re-raises it at once (KeyboardInterrupt: the run aborts without waiting for the step).

Slurm (`--signal=USR1@120`, or SIGTERM at preemption), Kubernetes (SIGTERM, then SIGKILL after
terminationGracePeriodSeconds) and torchrun (forwards SIGTERM to every worker, then SIGKILLs
them after a grace period) all warn before killing. The handler only sets a flag: a Python
signal handler runs between bytecodes of the main thread, and saving from inside it could
interrupt a half-updated optimiser step or a collective.

Ranks do not receive the signal at the same instant, so the decision to stop is a collective:
`any_rank_requested()` all-reduces the flag (MAX). Every rank must call it at the same steps
(e.g. every few iterations, decided by the step count), otherwise the collective deadlocks.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

# Exit status after a checkpoint taken on request: 0, so torchrun does not count a failure and
# restart the group; a requeueing Slurm script resubmits and auto-resume continues the run.
PREEMPTED_EXIT_CODE = 0


class PreemptionHandler:
    def __init__(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)) -> None:
        self.signals = tuple(signals)
        self.received: int | None = None  # the first signal number seen
        self._previous: dict[int, Any] = {}

    def install(self) -> PreemptionHandler:
        """Install the handlers (must be called from the main thread, as Python requires)."""
        for signum in self.signals:
            if signum == signal.SIGINT and signal.getsignal(signum) == signal.SIG_IGN:
                continue  # a background job: the shell made Ctrl-C not ours
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def __enter__(self) -> PreemptionHandler:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            if signum == signal.SIGINT:
                print("\nCtrl-C: saving a checkpoint at the end of this step (Ctrl-C again aborts at once)",
                      file=sys.stderr, flush=True)
            return
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            self._abort(signum, frame)

    def _abort(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum, signal.default_int_handler)
        signal.signal(signum, previous)
        if callable(previous):
            previous(signum, frame)
        raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        """True once this process received one of the signals (local: ranks may disagree)."""
        return self.received is not None

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.received).name if self.received is not None else None

    def any_rank_requested(self) -> bool:
        """True on every rank when any rank received a signal. A collective when distributed."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        flag = torch.tensor([1 if self.requested else 0], dtype=torch.int32, device=collective_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def collective_device() -> torch.device:
    """NCCL reduces only CUDA tensors; gloo takes CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
