"""Exact resume: a run interrupted at any step and resumed ends with the same bits as one that never stopped.

A tiny CIFAR ResNet-20 on the synthetic loader, deterministic on CPU, 24 steps (3 epochs of 8),
a checkpoint every 4 steps. Weights, optimiser state and RNG state of the final checkpoint are
compared with torch.equal, never with a tolerance.

The fast tests run in this process (the interruption is a real SIGTERM the run sends itself at a
chosen step). The subprocess tests (hard kill, corrupt checkpoint, 2 processes under torchrun,
torchrun --max-restarts) pay ~10 s of interpreter start-up per process here and are marked slow.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dtrain.checkpoint import atomic_load  # weights only, like every dtrain reader

TOTAL_STEPS = 24
EVERY = 4
CRASH_ENV = "DTRAIN_TEST_CRASH_AT_STEP"  # honoured by dtrain.engine.loop (test-only hook)
REPO = Path(__file__).resolve().parents[2]
RECIPE = "cifar10_resnet20"


def tiny_overrides(run_dir: Path, *extra: str) -> list[str]:
    return [
        f"run_dir={run_dir}",
        "data.loader=synthetic", "data.synthetic_samples=64", "data.synthetic_image_size=16",
        "data.crop_size=16", "data.val_resize=16", "data.val_crop=16", "data.workers=0",
        "optim.batch_size=8", f"schedule.max_iters={TOTAL_STEPS}", "schedule.milestones=[12,18]",
        "eval.batch_size=32", f"checkpoint.every_iters={EVERY}", "checkpoint.every_minutes=0",
        "checkpoint.keep_last=3", "train.deterministic=true", "train.device=cpu",
        "tracking.backend=none", "train.log_every_iters=4", *extra,
    ]


def final_checkpoint(run_dir: Path) -> dict:
    return atomic_load(run_dir / "checkpoints" / f"ckpt-{TOTAL_STEPS:09d}.pt")


def assert_bitwise_equal(resumed: dict, reference: dict) -> None:
    """Weights, optimiser buffers and every rank's RNG state (Python, NumPy, torch) are identical."""
    assert resumed["train_state"]["step"] == reference["train_state"]["step"] == TOTAL_STEPS
    assert resumed["train_state"]["epoch"] == reference["train_state"]["epoch"]
    assert resumed["model"].keys() == reference["model"].keys()
    for name, tensor in reference["model"].items():
        assert torch.equal(resumed["model"][name], tensor), f"model tensor {name} differs"
    ref_opt, res_opt = reference["optimizer"]["state"], resumed["optimizer"]["state"]
    assert ref_opt.keys() == res_opt.keys()
    for key, slots in ref_opt.items():
        for slot, value in slots.items():
            if torch.is_tensor(value):
                assert torch.equal(res_opt[key][slot], value), f"optimiser {key}.{slot} differs"
    assert len(resumed["rng"]) == len(reference["rng"])
    for rank, (mine, theirs) in enumerate(zip(resumed["rng"], reference["rng"])):
        assert torch.equal(mine["torch"], theirs["torch"]), f"torch RNG of rank {rank} differs"
        assert torch.equal(mine["numpy"]["keys"], theirs["numpy"]["keys"]), f"NumPy RNG of rank {rank} differs"
        assert mine["numpy"]["pos"] == theirs["numpy"]["pos"], f"NumPy RNG of rank {rank} differs"
        mine_py, theirs_py = mine["python"], theirs["python"]  # the 625 Mersenne Twister words as a tensor
        assert torch.equal(mine_py["internal"], theirs_py["internal"]), f"Python RNG of rank {rank} differs"
        assert (mine_py["version"], mine_py["gauss"]) == (theirs_py["version"], theirs_py["gauss"])


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name[5:14]) for p in (run_dir / "checkpoints").glob("ckpt-*.pt"))


# -- in this process -----------------------------------------------------------------------------


class _InstrumentedLoader:
    """Wraps the train loader of an in-process run.

    Every batch is scaled by a factor drawn from Python's, NumPy's and torch's global generators:
    a stand-in for any random op of a training step (dropout, a global-RNG augmentation), so the
    weights depend on those streams continuing exactly across a resume, not only on the saved
    tensors. With `sigterm_at`, SIGTERM is sent to this process when that batch is handed out,
    so the run is asked to stop during that step (counted from the start of this process).
    """

    def __init__(self, loader, sigterm_at: int | None) -> None:
        self._loader, self._sigterm_at, self._served = loader, sigterm_at, 0

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        for images, labels in self._loader:
            self._served += 1
            if self._served == self._sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)
            factor = 1.0 + 0.01 * (random.random() + float(np.random.rand()) + float(torch.rand(())))
            yield images * factor, labels


class _SignalledEvalLoader:
    """Sends SIGTERM to this process when the first batch of the `at`-th evaluation is handed out,
    noting which checkpoints `run_dir` holds at that moment (in `seen_at_signal`)."""

    seen_at_signal: list[int] = []

    def __init__(self, loader, at: int, run_dir: Path) -> None:
        self._loader, self._at, self._evaluations, self._run_dir = loader, at, 0, run_dir

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        self._evaluations += 1
        for index, batch in enumerate(self._loader):
            if index == 0 and self._evaluations == self._at:
                _SignalledEvalLoader.seen_at_signal[:] = checkpoint_steps(self._run_dir)
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch


def train_in_process(run_dir: Path, *, random_op: bool = True, sigterm_at_batch: int | None = None,
                     sigterm_at_eval: int | None = None):
    """dtrain.training.train_config in this process; torch's global settings are given back after."""
    from dtrain import builders, training
    from dtrain.resolve import load_config

    build = builders.build_loaders

    def build_instrumented(cfg, ctx, per_process):
        train_loader, eval_loader = build(cfg, ctx, per_process)
        if sigterm_at_eval is not None:
            eval_loader = _SignalledEvalLoader(eval_loader, sigterm_at_eval, run_dir)
        return _InstrumentedLoader(train_loader, sigterm_at_batch), eval_loader

    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess runs (OMP_NUM_THREADS=1): same kernels, same bits
    try:
        with pytest.MonkeyPatch.context() as patch:
            if random_op:
                patch.setattr(builders, "build_loaders", build_instrumented)
            cfg = load_config(RECIPE, tiny_overrides(run_dir))
            return training.train_config(cfg, stream=io.StringIO())
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def _uninterrupted(run_dir: Path, random_op: bool) -> dict:
    outcome = train_in_process(run_dir, random_op=random_op)
    assert outcome.exit_code == 0 and outcome.result.stopped == "finished"
    return final_checkpoint(run_dir)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> dict:
    """The uninterrupted single-process run as `python -m dtrain.train` does it (run here)."""
    return _uninterrupted(tmp_path_factory.mktemp("reference"), random_op=False)


@pytest.fixture(scope="module")
def reference_run_random_op(tmp_path_factory) -> dict:
    return _uninterrupted(tmp_path_factory.mktemp("reference_random_op"), random_op=True)


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


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


def run_train(run_dir: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 300):
    command = [sys.executable, "-m", "dtrain.train", RECIPE, *tiny_overrides(run_dir, *extra)]
    return subprocess.run(command, cwd=REPO, env=env or subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def torchrun_command(run_dir: Path, *torchrun_args: str, entry: list[str] | None = None, nproc: int = 2) -> list[str]:
    entry = entry or ["-m", "dtrain.train"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            *torchrun_args, *entry, RECIPE, *tiny_overrides(run_dir)]


def run_torchrun(run_dir: Path, *torchrun_args: str, env=None, entry=None, timeout: float = 400, nproc: int = 2):
    return subprocess.run(torchrun_command(run_dir, *torchrun_args, entry=entry, nproc=nproc), cwd=REPO,
                          env=env or subprocess_env(), capture_output=True, text=True, timeout=timeout)


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


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


@pytest.fixture(scope="module")
def reference_run_2proc(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("reference2")
    result = run_torchrun(run_dir)
    assert result.returncode == 0, explain(result)
    return final_checkpoint(run_dir)


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
