"""One run per run directory: an exclusive lock file, safe on a shared filesystem.

Two runs started into one run_dir used to both finish and leave a mixed directory (best.pt of
one, checkpoints of the other, interleaved metrics.jsonl). Rank 0 now takes RUN_DIR/.dtrain.lock
before it touches anything; a second run stops with one line naming the holder.

- Created with link(2) of a finished temp file, which is atomic on NFS as well (O_EXCL was not
  on old NFS clients), so the file is never seen half-written.
- It records host, PID, the PID's start time (a reused PID is not the holder), the start time
  and torchrun's job id. A background thread touches it every HEARTBEAT_SECONDS.
- A lock is stale, and taken over, when its holder is on this host and gone, when it belongs to
  an earlier worker group of the same torchrun job (a --max-restarts restart), or when its
  heartbeat stopped STALE_SECONDS ago (a holder on another host that died).
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dtrain.errors import DtrainError

LOCK_NAME = ".dtrain.lock"
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 60.0
_held: list[RunDirLock] = []


class RunDirLocked(DtrainError):
    """Another live run holds the run directory."""


def _process_start(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    now = _process_start(pid)
    if now is not None:
        return start is None or now == start
    try:
        os.kill(pid, 0)  # no /proc (macOS): existence only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def usable_directory(directory: Path, key: str) -> Path:
    """Create `directory` (the value of config key `key`: run_dir, checkpoint.dir), or say in one
    line why a run cannot write there. Checked before the first step: a checkpoint directory
    found unwritable at the first save (or only at the final one) would cost the run's work."""
    if directory.exists() and not directory.is_dir():
        raise DtrainError(f"{key} {directory} is a file, not a directory; choose another {key}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DtrainError(f"cannot write in {key} {directory} ({exc.strerror}); choose a writable {key}") from None
    return directory


class RunDirLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "torchrun_job": os.environ.get("TORCHELASTIC_RUN_ID")}
        self._stop = threading.Event()

    def acquire(self) -> RunDirLock:
        for earlier in [lock for lock in _held if lock.path == self.path]:
            earlier.release()  # a run that ended in this process (tests, the demo) hands it on
        taken_from: dict[str, Any] | None = None
        for _ in range(3):  # a takeover races with at most a few other takers
            if self._create():
                self._start_heartbeat()
                _held.append(self)
                if taken_from is not None:
                    print(f"dtrain: took over the run_dir lock of host {taken_from.get('host')} PID "
                          f"{taken_from.get('pid')} (last heartbeat {taken_from['heartbeat_age']:.0f} s ago)",
                          file=sys.stderr, flush=True)
                return self
            holder = self._read()
            if holder is not None and not self._stale(holder):
                raise RunDirLocked(self._held_by(holder))
            self._break(holder)
            taken_from = holder
        raise RunDirLocked(f"could not take {self.path}; another run is taking it at the same moment")

    def release(self) -> None:
        self._stop.set()
        holder = self._read()
        if holder is not None and holder.get("pid") == self.me["pid"] and holder.get("host") == self.me["host"]:
            self.path.unlink(missing_ok=True)
        if self in _held:
            _held.remove(self)

    # -- internals -----------------------------------------------------------------------------

    def _create(self) -> bool:
        tmp = self.path.with_name(f"{LOCK_NAME}.{self.me['host']}.{self.me['pid']}")
        tmp.write_text(json.dumps(self.me) + "\n")
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:  # a filesystem without hard links
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(self.me) + "\n")
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.path.read_text())
            if not isinstance(holder, dict):
                return None  # not a lock this code wrote
            holder["heartbeat_age"] = time.time() - self.path.stat().st_mtime
            return holder
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None  # gone, or torn by a crash mid-write on a filesystem without link()

    def _stale(self, holder: dict[str, Any]) -> bool:
        job = self.me["torchrun_job"]
        if job and holder.get("torchrun_job") == job:
            return True  # an earlier worker group of this torchrun job; torchrun stopped it
        if holder.get("host") == self.me["host"]:
            return not _alive(int(holder.get("pid", 0)), holder.get("pid_start"))
        return float(holder["heartbeat_age"]) > STALE_SECONDS

    def _break(self, holder: dict[str, Any] | None) -> None:
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{self.me['pid']}")
        try:
            os.replace(self.path, aside)
            aside.unlink()
        except FileNotFoundError:
            pass

    def _held_by(self, holder: dict[str, Any]) -> str:
        return (f"run_dir {self.path.parent} is in use by another run (host {holder.get('host')}, "
                f"PID {holder.get('pid')}, started {holder.get('started')}); wait for it, choose another "
                f"run_dir, or delete {self.path} if that run is dead (it goes stale {STALE_SECONDS:.0f} s "
                "after its last heartbeat)")

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        threading.Thread(target=beat, name="dtrain-run-lock", daemon=True).start()


def live_holder(run_dir: Path) -> dict[str, Any] | None:
    """Who holds run_dir's lock, or None when nobody does (or the holder is gone)."""
    lock = RunDirLock(Path(run_dir))
    holder = lock._read()
    return holder if holder is not None and not lock._stale(holder) else None


def release_all() -> None:
    """Release every lock this process holds (also before an os._exit, which skips atexit)."""
    for lock in list(_held):
        lock.release()


def lock_run_dir(run_dir: Path) -> RunDirLock:
    """Check run_dir is usable and take its lock until this process exits."""
    lock = RunDirLock(usable_directory(Path(run_dir), "run_dir")).acquire()
    if len(_held) == 1:
        atexit.register(release_all)
    return lock
