"""Process-tree and port helpers of the benchmarks, the fault drivers and the tests (Linux /proc):
one owner, so a fix to how a tree is walked reaches every measurement and every check."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path


def free_port() -> int:
    """A loopback port nobody listens on once this returns (connections to it are refused until a
    server or rendezvous takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    """The direct children of `pid` (every thread's), [] once it is gone."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the task ended meanwhile
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of `pid` (torchrun starts its workers in sessions of their own)."""
    found: list[int] = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found
