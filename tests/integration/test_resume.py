"""Exact resume: a run interrupted at any step and resumed ends with the same bits as one that never stopped.

A tiny CIFAR ResNet-20 on the synthetic loader, deterministic on CPU, 24 steps (3 epochs of 8),
a checkpoint every 4 steps. Weights, optimiser state and RNG state of the final checkpoint are
compared with torch.equal, never with a tolerance.

The fast tests run in this process (the interruption is a real SIGTERM the run sends itself at a
chosen step). The subprocess tests (hard kill, corrupt checkpoint, 2 processes under torchrun,
torchrun --max-restarts) pay ~10 s of interpreter start-up per process here and are marked slow.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from resume_runs import (
    CRASH_ENV,
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
    train_in_process,
)


# The signal is honoured at the next sync point (train.sync_every, here log_every_iters=4).
@pytest.mark.parametrize("signal_step, stop_step", [(3, 4), (6, 8)], ids=["mid-epoch", "epoch-end"])
def test_preempted_then_resumed_is_bitwise_identical(tmp_path: Path, reference_run_random_op: dict,
                                                     signal_step: int, stop_step: int) -> None:
    first = train_in_process(tmp_path, sigterm_at_batch=signal_step)
    assert first.exit_code == 0 and first.result.stopped == "preempted"
    assert first.result.step == stop_step
    assert stop_step in checkpoint_steps(tmp_path)  # the checkpoint taken on the signal
    second = train_in_process(tmp_path)
    assert second.exit_code == 0 and second.result.stopped == "finished"
    assert_bitwise_equal(final_checkpoint(tmp_path), reference_run_random_op)


# -- separate processes --------------------------------------------------------------------------


@pytest.mark.slow
def test_hard_kill_then_resume_and_corrupt_newest_fallback(tmp_path: Path, reference_run: dict) -> None:
    """Killed without any cleanup after step 10 (checkpoints 4 and 8 on disk), then resumed; a
    copy whose newest checkpoint is truncated resumes from step 4, says so, and ends the same."""
    killed = tmp_path / "killed"
    crashed = run_train(killed, env=subprocess_env(**{CRASH_ENV: "10"}))
    assert crashed.returncode != 0, explain(crashed)
    assert checkpoint_steps(killed) == [4, 8]

    corrupt = tmp_path / "corrupt"
    shutil.copytree(killed, corrupt)
    newest = corrupt / "checkpoints" / "ckpt-000000008.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    resumed = run_train(killed)
    assert resumed.returncode == 0, explain(resumed)
    assert "resumed from" in resumed.stdout and "ckpt-000000008.pt at step 8" in resumed.stdout
    assert_bitwise_equal(final_checkpoint(killed), reference_run)

    fell_back = run_train(corrupt)
    assert fell_back.returncode == 0, explain(fell_back)
    warning = [line for line in fell_back.stderr.splitlines() if "is corrupt" in line]
    assert len(warning) == 1 and "ckpt-000000008.pt" in warning[0] and "ckpt-000000004.pt" in warning[0]
    assert "ckpt-000000004.pt at step 4" in fell_back.stdout
    assert (corrupt / "checkpoints" / "ckpt-000000008.pt.corrupt").is_file()
    assert_bitwise_equal(final_checkpoint(corrupt), reference_run)


@pytest.mark.slow
def test_external_sigkill_at_an_arbitrary_step_then_resume(tmp_path: Path, reference_run: dict) -> None:
    """SIGKILL from outside as soon as the first checkpoint exists, wherever the run is then."""
    process = subprocess.Popen([sys.executable, "-m", "dtrain.train", RECIPE, *tiny_overrides(tmp_path)],
                               cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    first = tmp_path / "checkpoints" / f"ckpt-{EVERY:09d}.pt"
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert max(checkpoint_steps(tmp_path)) < TOTAL_STEPS
    resumed = run_train(tmp_path)
    assert resumed.returncode == 0, explain(resumed)
    assert_bitwise_equal(final_checkpoint(tmp_path), reference_run)


# -- two processes under torchrun ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_kill_then_resume_is_bitwise_identical(tmp_path: Path, reference_run_2proc: dict) -> None:
    crashed = run_torchrun(tmp_path, env=subprocess_env(**{CRASH_ENV: "10"}))
    assert crashed.returncode != 0, explain(crashed)
    assert checkpoint_steps(tmp_path) == [4, 8]
    resumed = run_torchrun(tmp_path)
    assert resumed.returncode == 0, explain(resumed)
    state = final_checkpoint(tmp_path)
    assert len(state["rng"]) == 2  # every rank's generators are in the checkpoint
    assert_bitwise_equal(state, reference_run_2proc)


@pytest.mark.slow
@pytest.mark.distributed
def test_four_process_kill_then_resume_is_bitwise_identical(tmp_path: Path) -> None:
    """With 3+ processes a ring all-reduce's summation order depends on DDP's bucket layout, which
    DDP rebuilds after a process's first step: the resumed run must not sum its first step in
    another order than the uninterrupted one (found by the cluster lab at 4 hosts)."""
    reference = run_torchrun(tmp_path / "reference", nproc=4)
    assert reference.returncode == 0, explain(reference)
    crashed = run_torchrun(tmp_path / "resumed", env=subprocess_env(**{CRASH_ENV: "10"}), nproc=4)
    assert crashed.returncode != 0, explain(crashed)
    resumed = run_torchrun(tmp_path / "resumed", nproc=4)
    assert resumed.returncode == 0, explain(resumed)
    state = final_checkpoint(tmp_path / "resumed")
    assert len(state["rng"]) == 4
    assert_bitwise_equal(state, final_checkpoint(tmp_path / "reference"))


# Entry point for torchrun: on the first attempt rank 1 dies after step 10 (no cleanup, like a lost
# node); torchrun --max-restarts restarts the whole group, which resumes from the checkpoint.
DIE_ONCE = """
import os, sys
if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" and os.environ.get("RANK") == "1":
    os.environ["DTRAIN_TEST_CRASH_AT_STEP"] = "10"
from dtrain.train import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_max_restarts_recovers_a_dead_worker(tmp_path: Path, reference_run_2proc: dict) -> None:
    entry = tmp_path / "die_once.py"
    entry.write_text(DIE_ONCE)
    run_dir = tmp_path / "run"
    result = run_torchrun(run_dir, "--max-restarts", "1", entry=[str(entry)])
    assert result.returncode == 0, explain(result)
    assert "resumed from" in result.stdout and "at step 8" in result.stdout
    assert_bitwise_equal(final_checkpoint(run_dir), reference_run_2proc)
