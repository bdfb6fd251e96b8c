"""The exact-resume harness shared by test_resume, test_preemption, test_preemption_eval and
test_grad_compression_resume: a tiny deterministic run, in this process or as `python -m
dtrain.train` / torchrun, and the bitwise comparison of final checkpoints. The reference runs
themselves are fixtures in conftest.py."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from processes import ROOT as REPO

from dtrain import builders, training
from dtrain.checkpoint import atomic_load  # weights only, like every dtrain reader
from dtrain.resolve import load_config

TOTAL_STEPS = 24
EVERY = 4
CRASH_ENV = "DTRAIN_TEST_CRASH_AT_STEP"  # honoured by dtrain.engine.loop (test-only hook)
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
    for rank, (mine, theirs) in enumerate(zip(resumed["rng"], reference["rng"], strict=True)):
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


class SignalledEvalLoader:
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
                SignalledEvalLoader.seen_at_signal[:] = checkpoint_steps(self._run_dir)
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch


def train_in_process(run_dir: Path, *, random_op: bool = True, sigterm_at_batch: int | None = None,
                     sigterm_at_eval: int | None = None, overrides: tuple[str, ...] = ()):
    """dtrain.training.train_config in this process (`overrides` after the tiny ones); torch's
    global settings are given back after."""
    build = builders.build_loaders

    def build_instrumented(cfg, ctx, per_process):
        train_loader, eval_loader = build(cfg, ctx, per_process)
        if sigterm_at_eval is not None:
            eval_loader = SignalledEvalLoader(eval_loader, sigterm_at_eval, run_dir)
        return _InstrumentedLoader(train_loader, sigterm_at_batch), eval_loader

    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess runs (OMP_NUM_THREADS=1): same kernels, same bits
    try:
        with pytest.MonkeyPatch.context() as patch:
            if random_op:
                patch.setattr(builders, "build_loaders", build_instrumented)
            cfg = load_config(RECIPE, tiny_overrides(run_dir, *overrides))
            return training.train_config(cfg, stream=io.StringIO())
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def preempted_then_resumed(run_dir: Path, overrides: tuple[str, ...] = ()) -> dict:
    """The in-process run stopped by SIGTERM during batch 3 (it checkpoints step 4), then run again
    to the end: the final checkpoint of the resumed run."""
    first = train_in_process(run_dir, sigterm_at_batch=3, overrides=overrides)
    assert first.exit_code == 0 and first.result.stopped == "preempted" and first.result.step == 4
    second = train_in_process(run_dir, overrides=overrides)
    assert second.exit_code == 0 and second.result.stopped == "finished"
    return final_checkpoint(run_dir)


def hard_killed_then_resumed(run_dir: Path, overrides: tuple[str, ...] = ()) -> dict:
    """`python -m dtrain.train` killed without cleanup after step 10 (checkpoint 8 on disk), then
    rerun: the final checkpoint of the resumed run."""
    crashed = run_train(run_dir, *overrides, env=subprocess_env(**{CRASH_ENV: "10"}))
    assert crashed.returncode != 0, explain(crashed)
    resumed = run_train(run_dir, *overrides)
    assert resumed.returncode == 0 and "ckpt-000000008.pt at step 8" in resumed.stdout, explain(resumed)
    return final_checkpoint(run_dir)


def uninterrupted(run_dir: Path, random_op: bool, overrides: tuple[str, ...] = ()) -> dict:
    outcome = train_in_process(run_dir, random_op=random_op, overrides=overrides)
    assert outcome.exit_code == 0 and outcome.result.stopped == "finished"
    return final_checkpoint(run_dir)


# -- separate processes --------------------------------------------------------------------------


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


def run_train(run_dir: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 300):
    command = [sys.executable, "-m", "dtrain.train", RECIPE, *tiny_overrides(run_dir, *extra)]
    return subprocess.run(command, cwd=REPO, env=env or subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def torchrun_command(run_dir: Path, *torchrun_args: str, entry: list[str] | None = None, nproc: int = 2,
                     overrides: tuple[str, ...] = ()) -> list[str]:
    entry = entry or ["-m", "dtrain.train"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            *torchrun_args, *entry, RECIPE, *tiny_overrides(run_dir, *overrides)]


def run_torchrun(run_dir: Path, *torchrun_args: str, env=None, entry=None, timeout: float = 400, nproc: int = 2,
                 overrides: tuple[str, ...] = ()):
    command = torchrun_command(run_dir, *torchrun_args, entry=entry, nproc=nproc, overrides=overrides)
    return subprocess.run(command, cwd=REPO, env=env or subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
