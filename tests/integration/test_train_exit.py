"""A finished run's process is gone soon after its last line, whatever a library's exit hook still
waits for: with a tracking server that accepts connections and never answers, MLflow's own exit
hooks kept a finished `dtrain train` alive for about a minute."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from fault_runs import base_args, start
from processes import CHECKOUT_PYTHONPATH

from dtrain.distributed.lifetime import EXIT_GRACE_SECONDS

# A library's exit hook that waits for the silent server's answer (it never comes). sitecustomize
# runs at interpreter start, before dtrain; its hook runs after dtrain's own (atexit is LIFO).
EXIT_HOOK = """import atexit, os, socket

def _wait_for_the_tracking_server():
    socket.create_connection(("127.0.0.1", int(os.environ["SILENT_PORT"]))).recv(1)

atexit.register(_wait_for_the_tracking_server)
"""
MARGIN_SECONDS = 15  # interpreter teardown on a loaded machine


def _lines_with_times(process, log: Path, timeout: float) -> tuple[list[tuple[float, str]], float]:
    """(time, line) of everything the run printed, and when it exited; fails after `timeout`."""
    seen: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        assert time.monotonic() < deadline, f"still running after {timeout} s:\n{log.read_text()[-2000:]}"
        lines = log.read_text().splitlines()
        seen += [(time.monotonic(), line) for line in lines[len(seen):]]
        time.sleep(0.1)
    exited = time.monotonic()
    lines = log.read_text().splitlines()
    seen += [(exited, line) for line in lines[len(seen):]]
    return seen, exited


@pytest.mark.slow
@pytest.mark.parametrize("entry, tracking", [
    (["-m", "dtrain.cli", "train"], "mlflow"),  # `dtrain train`: the console script runs the same main()
    (["-m", "dtrain.train"], "jsonl"),
], ids=["dtrain-train-silent-mlflow", "python-m-dtrain.train"])
def test_the_process_is_gone_soon_after_its_last_line(tmp_path: Path, entry: list[str], tracking: str,
                                                      silent_server) -> None:
    pytest.importorskip("mlflow")
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(EXIT_HOOK)
    run_dir, log = tmp_path / "run", tmp_path / "log"
    args = base_args(run_dir, f"tracking.backend={tracking}",
                     f"tracking.uri=http://127.0.0.1:{silent_server.port}")
    process = start([sys.executable, *entry, *args], log, PYTHONPATH=f"{hook_dir}:{CHECKOUT_PYTHONPATH}",
                    SILENT_PORT=str(silent_server.port))
    lines, exited = _lines_with_times(process, log, timeout=300)
    assert process.returncode == 0, log.read_text()[-2000:]
    summary = max(at for at, line in lines if line.startswith("finished: finished at step 6"))
    assert exited - summary < EXIT_GRACE_SECONDS + MARGIN_SECONDS, log.read_text()[-2000:]
