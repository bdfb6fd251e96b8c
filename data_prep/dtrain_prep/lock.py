"""One `dtrain prepare` per --out: an exclusive flock on OUT/.prepare.lock holding the owner's PID.

The kernel drops an flock when its process dies, so the lock of a killed run is never stale: the
file stays, the next run takes it over. FFCV's forked writers inherit the descriptor, so a run is
"in use" until its last child has exited too (they may still be writing into OUT).
"""

from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from .errors import DataPrepError

LOCK_NAME = ".prepare.lock"


@contextmanager
def locked_out(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise DataPrepError(f"--out {out} is in use by another dtrain prepare (PID {owner}): wait for it "
                                "to finish or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock (unless a forked child still holds the descriptor)
