"""Run `python -m dtrain.train` as an operator does and check what it leaves behind: the exit
code, the one line, every process of its tree gone, and nothing lost on disk. Shared by the
fault tests in tests/integration/ (the process-tree checks: tests/processes.py)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from processes import ROOT, assert_tree_gone, checkout_env


def base_args(run_dir: Path, *extra: str) -> list[str]:
    return ["digits_resnet20", "data.loader=synthetic", "data.synthetic_samples=64", "data.synthetic_image_size=32",
            "optim.batch_size=16", "schedule.max_iters=6", "schedule.epochs=null", "eval.every_epochs=0",
            "tracking.backend=jsonl", f"run_dir={run_dir}", "train.device=cpu", "checkpoint.every_minutes=0", *extra]


def start(command: list[str], log: Path, *, preexec_fn: Callable[[], object] | None = None,
          **extra_env: str) -> subprocess.Popen:
    """In a session of its own, so every descendant can be found by its session id."""
    with open(log, "w") as out:  # the child holds its own copy of the descriptor
        return subprocess.Popen(command, env=checkout_env(**extra_env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=preexec_fn)


def finish(process: subprocess.Popen, log: Path, timeout: float = 180) -> tuple[int, str]:
    """Its exit code and output, once it and its whole tree are gone."""
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"did not exit within {timeout} s:\n{log.read_text()[-2000:]}") from None
    assert_tree_gone(process.pid)
    return code, log.read_text()


def train(args: list[str], log: Path, timeout: float = 180, **extra_env: str) -> tuple[int, str]:
    return finish(start([sys.executable, "-m", "dtrain.train", *args], log, **extra_env), log, timeout)


def wait_for(condition: Callable[[], object], process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until condition() holds; fails if the process exits first or it takes longer than `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"exited with {process.returncode} first:\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"waited {timeout} s:\n{log.read_text()[-2000:]}"
        time.sleep(0.1)


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("Error:", "Traceback"))]


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("ckpt-*.pt"))


def assert_checkpoints_sound(run_dir: Path) -> list[int]:
    """Every checkpoint left loads (its SHA-256 checked) and holds finite weights, buffers and
    optimiser state; no temp file is left beside them. Returns their steps."""
    from dtrain.checkpoint.atomic import TEMP_MARKER, atomic_load

    directory = run_dir / "checkpoints"
    assert not [p.name for p in directory.iterdir() if TEMP_MARKER in p.name]
    steps = checkpoint_steps(run_dir)
    for step in steps:
        state = atomic_load(directory / f"ckpt-{step:09d}.pt")
        assert state["train_state"]["step"] == step
        model = state["model"]
        assert any(key.endswith("running_var") for key in model)  # BatchNorm buffers are checked too
        tensors = [*model.values(), *(t for part in state["optimizer"]["state"].values() for t in part.values())]
        floats = [t for t in tensors if torch.is_tensor(t) and t.is_floating_point()]
        assert floats and all(bool(t.isfinite().all()) for t in floats), f"ckpt {step} holds NaN/Inf"
    return steps


def metric_records(run_dir: Path) -> list[dict]:
    """metrics.jsonl, every line of which must be whole JSON (nothing torn, nothing lost)."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_metrics_complete(run_dir: Path, status: str, through: int, records: list[dict] | None = None,
                            first: int = 1) -> list[float]:
    """metrics.jsonl (or `records`, a part of it) has train/loss for every step first..n, n >=
    `through` (with tracking.metrics_every_iters=1), and ends with `status`. Returns the losses."""
    records = metric_records(run_dir) if records is None else records
    losses = [(r["step"], r["metrics"]["train/loss"]) for r in records
              if r["type"] == "metrics" and "train/loss" in r["metrics"]]
    steps = [step for step, _ in losses]
    assert steps and steps == list(range(first, first + len(steps))) and steps[-1] >= through, \
        f"train/loss logged for steps {steps}; the run reached step {through}"
    assert (records[-1]["type"], records[-1].get("status")) == ("status", status)
    return [loss for _, loss in losses]


def all_finite(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values)
