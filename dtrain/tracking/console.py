"""What a person reads in a run's logs: every line a non-zero rank prints starts with "[rank N] ",
and rank 0 prints one header line at start, so rank 0's log is found by searching for it:

    dtrain rank 0 of 8 | run dir /runs/r200 | devices 8 x NVIDIA H200 on node0 | MLflow http://mlflow:5000/#/...

Launchers do not agree on where rank 0's output lands (with a c10d rendezvous the node that
holds rank 0 is whichever agent joined first), so the header line is the stable landmark.

Output is never worth a checkpoint: `dtrain train ... | tee log` and Ctrl-C kills tee with the
same SIGINT, and the next line printed used to raise BrokenPipeError out of the training step
(no checkpoint, and the traceback went to the same dead pipe). keep_output_without_reader()
makes stdout and stderr drop what nobody can read any more.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

HEADER_START = "dtrain rank 0 of "


class RankPrefixedStream:
    """A text stream that starts every line written through it with `prefix`."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self._stream = stream
        self.prefix = prefix
        self._at_line_start = True

    def write(self, text: str) -> int:
        if not text:
            return 0
        lines = text.split("\n")
        out = []
        for index, line in enumerate(lines):
            if index:
                out.append("\n")
                self._at_line_start = True
            if line:
                if self._at_line_start:
                    out.append(self.prefix)
                out.append(line)
                self._at_line_start = False
        self._stream.write("".join(out))
        return len(text)

    def __getattr__(self, name: str):  # flush, fileno, isatty, encoding ... of the wrapped stream
        return getattr(self._stream, name)


# A reader that went away (pipe, socket) or a terminal that hung up.
_READER_GONE = {errno.EPIPE, errno.ECONNRESET, errno.EIO, errno.ENXIO}


class ReaderSafeStream:
    """A text stream whose writes never fail because its reader is gone. The first such failure
    points the file descriptor at /dev/null, so every later write (also by a library holding the
    raw stream, and Python's own flush at exit) succeeds and is dropped."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text, default=len(text))

    def flush(self) -> None:
        self._guarded(self._stream.flush, default=None)

    def _guarded(self, call, *args, default):
        try:
            return call(*args)
        except OSError as exc:
            if exc.errno not in _READER_GONE:
                raise
        except ValueError:  # the stream was closed
            pass
        self._drop_everything()
        return default

    def _drop_everything(self) -> None:
        self.reader_gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
            self._stream.flush()  # what was buffered for the dead reader goes to /dev/null
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str):  # fileno, isatty, encoding ... of the wrapped stream
        return getattr(self._stream, name)


def keep_output_without_reader() -> None:
    """Make sys.stdout and sys.stderr drop output once their reader is gone (see the module's
    docstring). Call once, early, before anything holds on to the streams."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, ReaderSafeStream):
            setattr(sys, name, ReaderSafeStream(stream))


def prefix_rank_output(rank: int) -> None:
    """On ranks other than 0, prefix everything this process prints to stdout and stderr
    (progress, warnings, tracebacks) with "[rank N] ". Call once, early, in each process."""
    if rank == 0:
        return
    prefix = f"[rank {rank}] "
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, RankPrefixedStream):
            setattr(sys, name, RankPrefixedStream(stream, prefix))


def header_line(*, world_size: int, run_dir: Path | str, devices: Sequence[str], run_link: str | None,
                backend: str | None = None, tracking_problem: str | None = None) -> str:
    """Rank 0's first line: where the run writes, on what it runs, and where to watch it (or,
    when the tracking server is not reached, why: `tracking_problem`, a Tracker's `problem`)."""
    counts: dict[str, int] = {}
    for device in devices:
        counts[device] = counts.get(device, 0) + 1
    described = ", ".join(f"{n} x {name}" if n > 1 else name for name, n in counts.items())
    group = f"process group {backend}" if backend else "no process group"
    parts = [f"{HEADER_START}{world_size} ({group})", f"run dir {Path(run_dir).resolve()}",
             f"devices {described} on {socket.gethostname()}"]
    if run_link:
        parts.append(f"MLflow {run_link}")
    else:
        parts.append(f"MLflow {tracking_problem}" if tracking_problem else "no MLflow run")
    return " | ".join(parts)
