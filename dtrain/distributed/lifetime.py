"""Processes die with the process that owns them, and a finished process always exits.

- A training worker started by torchrun dies with its agent: killing the agent (its node lost,
  scancel, a crashed launcher) must not leave workers that go on training and writing
  checkpoints beside the rerun. Linux's PR_SET_PDEATHSIG delivers a signal when the parent dies.
- A DataLoader worker dies with its training process, for the same reason.
- DataLoader workers ignore SIGTERM/SIGUSR1 (preemption is the main process's business, see
  dtrain/data/loaders.py), so the SIGTERM multiprocessing sends its daemonic children at exit
  does not stop them and its join() waited forever (a finished run hung for an hour). An
  atexit hook, run before multiprocessing's own, SIGKILLs them first: a loader worker holds
  nothing worth saving.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1
_JOIN_SECONDS = 5.0
# After the last line: enough for the exit hooks that must run (locks released, loader workers
# reaped: seconds on a loaded machine), not for one that waits on a silent tracking server.
EXIT_GRACE_SECONDS = 20.0
_hook_installed = False


def die_with_parent(signum: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `signum` to this process when its parent exits (Linux only).

    Returns False where that is not available. If the parent is already gone (it died before
    this call), exits at once: the signal would never come.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() == 1:
        os._exit(1)
    return True


def launched_by_torchrun() -> bool:
    """torchrun's agent sets TORCHELASTIC_RUN_ID in every worker's environment."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def stop_daemonic_children() -> None:
    """SIGKILL this process's daemonic multiprocessing children (DataLoader workers) and reap them."""
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if children and threading.current_thread() is threading.main_thread():
        # torch's DataLoader turns a worker's death into an exception from its SIGCHLD handler;
        # these deaths are ours.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        if child.pid is not None:  # None: never started
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(child.pid, signal.SIGKILL)
    for child in children:
        child.join(_JOIN_SECONDS)


def exit_within(code: int, seconds: float = EXIT_GRACE_SECONDS) -> int:
    """Return `code`, and make sure the interpreter is gone `seconds` later whatever still runs
    (a non-daemon thread of a library, a child that will not die): a finished run must not hold
    its GPUs for an hour. A daemon timer outlives sys.exit's cleanup and calls os._exit."""
    def force() -> None:
        sys.stderr.write(f"dtrain: still exiting after {seconds:.0f} s; forcing exit {code}\n")
        sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()
    return code


def stop_children_at_exit() -> None:
    """Install stop_daemonic_children as an exit hook, once. atexit runs hooks last-in first-out,
    so this one (installed after multiprocessing's) runs before multiprocessing joins them."""
    global _hook_installed
    if not _hook_installed:
        atexit.register(stop_daemonic_children)
        _hook_installed = True
