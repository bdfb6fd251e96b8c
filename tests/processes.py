"""The tests' one owner of ports and process trees: a free loopback port, a server that never
answers, the environment a child Python process runs this checkout with, and the /proc walks that
find (and wait out) what a test started. Fixtures (tests/conftest.py) and code that runs where no
fixture reaches (a worker started by mp.spawn, a module-level harness) use these."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from dtrain.bench.processes import children, descendants, free_port

ROOT = Path(__file__).resolve().parents[1]
# A checkout that is not installed: dtrain at the top, dtrain_prep inside data_prep/.
CHECKOUT_PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "data_prep")])
TREE_GONE_SECONDS = 15.0

__all__ = ["children", "descendants", "free_port"]  # dtrain.bench.processes, re-exported for the tests


class SilentServer:
    """Accepts connections and never answers: the tracking server that stalled training."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for connection in [self.sock, *self.held]:
            connection.close()


def checkout_env(**extra: str) -> dict[str, str]:
    """os.environ for a child that runs this checkout's code: no launcher variables inherited, one
    OpenMP thread, no ambient MLflow server."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHELASTIC", "RANK", "WORLD_SIZE"))}
    return {**clean, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": "", "PYTHONPATH": CHECKOUT_PYTHONPATH, **extra}


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (killed, not yet reaped by whoever adopted it) is dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def session_members(sid: int) -> list[str]:
    """Every process (zombies included) of session `sid`, as 'pid state'."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            found.append(f"{stat.parent.name} {fields[0]}")
    return found


def processes_naming(text: str) -> list[int]:
    """Every live process whose command line holds `text`, e.g. a run dir: forked loader workers
    carry their parent's. It finds one that left the session, too; a zombie has no command line
    (session_members finds those)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def assert_tree_gone(sid: int, within: float = TREE_GONE_SECONDS) -> None:
    """Every process of session `sid` (a child started with start_new_session=True) has ended."""
    deadline = time.monotonic() + within
    while (left := session_members(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind (orphans or zombies): {left}"


def assert_gone(pids: list[int], within: float = TREE_GONE_SECONDS) -> None:
    deadline = time.monotonic() + within
    while (left := [p for p in pids if Path(f"/proc/{p}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind (orphans or zombies): {left}"
