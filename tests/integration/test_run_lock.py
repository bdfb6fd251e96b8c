"""One run per run_dir: a live holder refuses a second run in one line; a dead one is taken over."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dtrain.checkpoint import run_lock
from dtrain.checkpoint.run_lock import LOCK_NAME, RunDirLocked, live_holder, lock_run_dir
from dtrain.errors import DtrainError


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time\n"
                               "from dtrain.checkpoint.run_lock import lock_run_dir\n"
                               f"lock_run_dir({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirLocked, match=f"in use by another run .*PID {holder.pid}") as info:
            lock_run_dir(tmp_path)
        assert "\n" not in str(info.value)
        assert live_holder(tmp_path)["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
    assert live_holder(tmp_path) is None  # its process is gone: the lock is stale
    lock = lock_run_dir(tmp_path)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == lock.me["pid"]
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_stale_locks_are_taken_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / LOCK_NAME
    me = run_lock.RunDirLock(tmp_path).me
    stale = [
        {**me, "pid": _dead_pid()},  # this host, process gone
        {**me, "host": "elsewhere", "pid": 1},  # another host, heartbeat stopped (mtime set below)
        {**me, "pid": 1, "torchrun_job": "job-7"},  # an earlier worker group of the same torchrun job
    ]
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-7")
    for holder in stale:
        path.write_text(json.dumps(holder))
        old = path.stat().st_mtime - run_lock.STALE_SECONDS - 5
        os.utime(path, (old, old))
        lock = lock_run_dir(tmp_path)
        assert json.loads(path.read_text())["pid"] == me["pid"]
        lock.release()


def test_another_host_with_a_fresh_heartbeat_holds_the_lock(tmp_path: Path) -> None:
    me = run_lock.RunDirLock(tmp_path).me
    (tmp_path / LOCK_NAME).write_text(json.dumps({**me, "host": "node7", "pid": 4242}))
    with pytest.raises(RunDirLocked, match="host node7, PID 4242"):
        lock_run_dir(tmp_path)


def test_unusable_run_dirs_are_one_line_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DtrainError, match="is a file, not a directory"):
        lock_run_dir(a_file)
    with pytest.raises(DtrainError, match="choose a writable run_dir"):
        lock_run_dir(a_file / "below")


def test_a_read_only_run_dir_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(self: Path, data: bytes) -> int:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(DtrainError, match=r"cannot write in run_dir .* \(Read-only file system\); choose a writable"):
        lock_run_dir(tmp_path / "run")
