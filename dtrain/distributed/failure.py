"""A failure on one rank ends every rank, with its cause printed once, and never a deadlock.

The rule: after an exception no process runs another collective. The failing process prints
its cause (one line for a user error, the traceback for a bug), then leaves with `os._exit`
without tearing the process group down (that would be a collective that can hang). torchrun
sees a worker die and stops the others; survivors blocked in an all_reduce get a connection
error from gloo/NCCL, recognised here as "a peer failed" and not printed again.

Errors raised identically on every rank (a config error, a NaN loss seen through an all_reduce)
carry `raised_on_every_rank = True` and are printed by rank 0 only.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable

from dtrain.checkpoint.run_lock import release_all
from dtrain.distributed.lifetime import stop_daemonic_children
from dtrain.distributed.peers import directory
from dtrain.errors import DtrainError

EXIT_FAILURE = 1
EXIT_USER_ERROR = 2  # the same code the `dtrain` CLI uses for a DtrainError

# Words in the message of an exception a collective raises when another process went away.
_PEER_FAILURE_HINTS = (
    "connection closed by peer", "connection reset by peer", "broken pipe", "socket closed",
    "nccl communicator was aborted", "ncclremoteerror", "timed out", "timeout", "rendezvous",
    "connection refused", "read error", "gloo",
)


class SymmetricError(DtrainError):
    """A user-facing error that every rank raises at the same point: printed by rank 0 only."""

    raised_on_every_rank = True


def looks_like_peer_failure(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return "distbackenderror" in text or any(hint in text for hint in _PEER_FAILURE_HINTS)


def describe_failure(exc: BaseException, rank: int, world_size: int) -> str | None:
    """What this rank prints about `exc`, or None when another rank has printed (or will print) it."""
    where = f"[rank {rank}/{world_size}] " if world_size > 1 else ""
    if isinstance(exc, DtrainError):
        if getattr(exc, "raised_on_every_rank", False) and rank != 0:
            return None
        return f"Error: {where}{exc}"
    if world_size > 1 and looks_like_peer_failure(exc):
        return peer_failure_line(exc, rank, world_size)
    body = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    return f"{where}training failed:\n{body}"


def peer_failure_line(exc: BaseException, rank: int, world_size: int) -> str:
    """One line naming the rank and host that died, found by probing every peer (dtrain.distributed.peers)."""
    peers = directory()
    lost = peers.lost_peers() if peers is not None else None
    cause = f"lost {lost}" if lost else "a peer failed"
    detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
    return (f"dtrain: [rank {rank}/{world_size} on {socket.gethostname()}] stopping: {cause} ({detail}); "
            "a restart resumes from the newest checkpoint")


def user_error_line(exc: BaseException) -> str:
    """The one line for a user error; under torchrun it adds that restarts will not help, since
    torchrun retries any failed worker whatever its exit code."""
    line = f"Error: {exc}"
    if "TORCHELASTIC_RUN_ID" in os.environ and exit_code_for(exc) == EXIT_USER_ERROR:
        line += " (a configuration error: torchrun's restarts cannot fix it)"
    return line


def exit_code_for(exc: BaseException) -> int:
    """2 for a user error, 1 for a failure; a DtrainError that is not the user's fault (a peer
    that could not join, say) carries its own `exit_code`."""
    if isinstance(exc, DtrainError):
        return getattr(exc, "exit_code", EXIT_USER_ERROR)
    return EXIT_FAILURE


def hard_exit(code: int) -> None:
    """os._exit after the little that must not be skipped: atexit hooks do not run."""
    release_all()
    stop_daemonic_children()
    os._exit(code)


def run_rank(body: Callable[[], int], rank: int, world_size: int) -> int:
    """Run `body` (returns an exit code); on an exception print once and hard-exit.

    In a single process this returns the exit code instead of calling os._exit, so callers
    (tests, the demo) can go on.
    """
    try:
        return body()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - everything must end the job cleanly
        if isinstance(exc, SystemExit):
            raise
        if world_size == 1 and not isinstance(exc, DtrainError):
            raise  # Python prints the traceback once itself
        if world_size > 1:
            # This process is leaving. torchrun's agent sends SIGTERM to the survivors as soon as it
            # sees a failure, and the preemption handler was uninstalled on the way here: without
            # this the line naming the cause would die unprinted.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        message = describe_failure(exc, rank, world_size)
        if message:
            print(message, file=sys.stderr, flush=True)
        code = exit_code_for(exc)
        if world_size > 1:
            sys.stdout.flush()
            if peers := directory():
                peers.linger()
            hard_exit(code)  # no destroy_process_group: it is a collective and may hang
        return code
