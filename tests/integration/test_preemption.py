"""Preemption: SIGTERM / SIGUSR1 mid-run -> a checkpoint at that step, a clean exit, an exact resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The exact-resume harness; its reference runs are fixtures of conftest.py.
from resume_runs import (
    EVERY,
    RECIPE,
    REPO,
    TOTAL_STEPS,
    assert_bitwise_equal,
    checkpoint_steps,
    explain,
    final_checkpoint,
    run_torchrun,
    run_train,
    subprocess_env,
    tiny_overrides,
    torchrun_command,
)


def start_and_signal(command: list[str], run_dir: Path, signum: int) -> subprocess.CompletedProcess:
    """Start `command`, send `signum` once the first checkpoint exists, wait for the exit."""
    process = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    first = run_dir / "checkpoints" / f"ckpt-{EVERY:09d}.pt"
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before the signal could be sent"
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def stopped_at(run_dir: Path) -> int:
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["stopped"] == "preempted"
    return final["step"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_checkpoints_exits_zero_and_resumes_exactly(tmp_path: Path, reference_run: dict, signum) -> None:
    command = [sys.executable, "-m", "dtrain.train", RECIPE, *tiny_overrides(tmp_path)]
    stopped = start_and_signal(command, tmp_path, signum)
    assert stopped.returncode == 0, explain(stopped)
    step = stopped_at(tmp_path)
    assert EVERY <= step < TOTAL_STEPS
    assert step in checkpoint_steps(tmp_path)  # written at the step the run stopped, not an older one
    assert f"preempted ({signal.Signals(signum).name})" in stopped.stdout
    resumed = run_train(tmp_path)
    assert resumed.returncode == 0, explain(resumed)
    assert f"at step {step}" in resumed.stdout
    assert_bitwise_equal(final_checkpoint(tmp_path), reference_run)


@pytest.mark.slow
@pytest.mark.distributed
def test_sigterm_to_torchrun_checkpoints_every_rank_and_resumes(tmp_path: Path, reference_run_2proc: dict) -> None:
    """Kubernetes and Slurm signal the launcher; torchrun forwards SIGTERM to both workers, which
    agree (all-reduced flag) on a step, checkpoint once, and leave before torchrun's grace ends."""
    stopped = start_and_signal(torchrun_command(tmp_path), tmp_path, signal.SIGTERM)
    # torchrun itself exits 1 with a SignalException traceback whatever its workers do; the
    # workers' part is the checkpoint and the "preempted" line.
    assert "preempted (SIGTERM)" in stopped.stdout, explain(stopped)
    step = stopped_at(tmp_path)
    assert EVERY <= step < TOTAL_STEPS, explain(stopped)
    assert step in checkpoint_steps(tmp_path)
    resumed = run_torchrun(tmp_path)
    assert resumed.returncode == 0, explain(resumed)
    assert f"at step {step}" in resumed.stdout
    assert_bitwise_equal(final_checkpoint(tmp_path), reference_run_2proc)
