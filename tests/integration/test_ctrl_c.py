"""Ctrl-C behaves like SIGTERM: a checkpoint at the next step, exit 0, a resume hint; a second
Ctrl-C aborts at once. Ctrl-C reaches the whole foreground process group, loader workers too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import CHECKOUT_PYTHONPATH

REPO = Path(__file__).resolve().parents[2]


def start(run_dir: Path, log: Path, batch: int = 8) -> subprocess.Popen:
    command = [sys.executable, "-m", "dtrain.cli", "train", "digits_resnet20", "data.loader=synthetic",
               "data.synthetic_samples=4096", "data.workers=1", f"optim.batch_size={batch}", "eval.batch_size=16",
               "schedule.max_iters=100000", "tracking.backend=jsonl", "train.log_every_iters=1",
               "checkpoint.at_epoch_end=false", f"run_dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": CHECKOUT_PYTHONPATH, "OMP_NUM_THREADS": "1"}
    # A session of its own, so the signals go to the run's process group as a terminal's Ctrl-C does.
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)


def wait_for_steps(process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if " step 2/" in log.read_text():  # the progress lines of a run without a terminal
            return
        time.sleep(0.1)
    raise AssertionError(f"no training step logged (exit {process.poll()})")


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_says_how_to_resume(tmp_path) -> None:
    log = tmp_path / "out.log"
    process = start(tmp_path / "run", log)
    wait_for_steps(process, log)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=240)
    stdout = log.read_text()
    assert process.returncode == 0, stdout + stderr
    assert "finished: preempted" in stdout and "to resume: run the same command again" in stdout
    assert list((tmp_path / "run" / "checkpoints").glob("ckpt-*.pt"))
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_a_second_ctrl_c_aborts_at_once(tmp_path) -> None:
    log = tmp_path / "out.log"
    process = start(tmp_path / "run", log, batch=256)  # steps long enough for two presses within one
    wait_for_steps(process, log)
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.2)  # two presses, not one signal delivered twice at once
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=240)
    stdout = log.read_text()
    assert process.returncode == 130, stdout + stderr
    assert "Aborted." in stderr and "finished:" not in stdout


@pytest.mark.slow
def test_ctrl_c_that_also_kills_tee_still_checkpoints(tmp_path) -> None:
    """`dtrain train ... 2>&1 | tee log`, then Ctrl-C: tee dies of the same SIGINT, and every line
    printed after it (the Ctrl-C notice, progress, the summary) goes to a pipe nobody reads."""
    command = [sys.executable, "-m", "dtrain.cli", "train", "digits_resnet20", "data.loader=synthetic",
               "data.synthetic_samples=4096", "data.workers=1", "optim.batch_size=8", "eval.batch_size=16",
               "schedule.max_iters=100000", "tracking.backend=jsonl", "train.log_every_iters=1",
               "checkpoint.at_epoch_end=false", f"run_dir={tmp_path / 'run'}"]
    env = {**os.environ, "PYTHONPATH": CHECKOUT_PYTHONPATH, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    seen = b""
    while b" step 2/" not in seen:  # tee reading the progress lines
        line = process.stdout.readline()
        assert line, f"exited with {process.wait()} before training:\n{seen.decode()[-2000:]}"
        seen += line
    process.stdout.close()  # tee is gone
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=240) == 0  # as Ctrl-C asks: checkpoint, exit 0
    run_dir = tmp_path / "run"
    assert list((run_dir / "checkpoints").glob("ckpt-*.pt"))
    assert json.loads((run_dir / "final_metrics.json").read_text())["stopped"] == "preempted"
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last == {**last, "type": "status", "status": "KILLED"}
