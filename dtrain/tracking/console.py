"""What a person reads in a run's logs: every line a non-zero rank prints starts with "[rank N] ",
and rank 0 prints one header line at start, so rank 0's log is found by searching for it:

    dtrain rank 0 of 8 | run dir /runs/r200 | devices 8 x NVIDIA H200 on node0 | MLflow http://mlflow:5000/#/...

Launchers do not agree on where rank 0's output lands (with a c10d rendezvous the node that
holds rank 0 is whichever agent joined first), so the header line is the stable landmark.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Sequence, TextIO

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
                backend: str | None = None) -> str:
    """Rank 0's first line: where the run writes, on what it runs, and where to watch it."""
    counts: dict[str, int] = {}
    for device in devices:
        counts[device] = counts.get(device, 0) + 1
    described = ", ".join(f"{n} x {name}" if n > 1 else name for name, n in counts.items())
    group = f"process group {backend}" if backend else "no process group"
    parts = [f"{HEADER_START}{world_size} ({group})", f"run dir {Path(run_dir).resolve()}",
             f"devices {described} on {socket.gethostname()}"]
    parts.append(f"MLflow {run_link}" if run_link else "no MLflow run")
    return " | ".join(parts)
