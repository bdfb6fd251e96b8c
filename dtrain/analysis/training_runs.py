"""Run the trainer for an experiment: one `python -m dtrain.train RECIPE overrides...` process
per run, so each run is exactly what a user gets from `dtrain train` (same run dir, checkpoints,
MLflow store), and a crash in one run cannot leave state behind in the next.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dtrain.errors import DtrainError

LOG_NAME = "train.log"


@dataclass(frozen=True)
class FinishedRun:
    run_dir: Path
    seconds: float
    command: list[str]


def shortened_schedule(budget_iters: int) -> list[str]:
    """The CIFAR recipe compressed to `budget_iters`: lr / 10 at 50% and 75% of the run, as R1's
    32k and 48k of 64k iterations, so a short run still sees both lr drops. The budget is in
    iterations at the run's own batch (no epoch-keeping rescaling)."""
    if budget_iters < 4:
        raise DtrainError(f"--budget-iters={budget_iters} is too small; give at least 4 iterations")
    return ["schedule.kind=step_iters", f"schedule.milestones=[{budget_iters // 2},{budget_iters * 3 // 4}]",
            "schedule.epochs=null", f"schedule.max_iters={budget_iters}", "schedule.iters_at_batch=null"]


def train_command(recipe: str, run_dir: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "dtrain.train", recipe, *overrides, f"run_dir={run_dir}"]


def run_training(recipe: str, run_dir: Path, overrides: list[str], *, overwrite: bool = False,
                 echo=print, keep_tracking_env: bool = False) -> FinishedRun:
    """Train into run_dir (an existing run there resumes, unless overwrite); output goes to
    RUN_DIR/train.log. A failed run raises DtrainError with the end of its log.

    keep_tracking_env=False drops MLFLOW_TRACKING_URI so that the run logs to RUN_DIR/mlflow.db,
    where an experiment reads it back; True keeps a user's tracking server."""
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    command = train_command(recipe, run_dir, overrides)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # one process per run on a shared CPU
    if not keep_tracking_env:
        env.pop("MLFLOW_TRACKING_URI", None)
    log_path = run_dir / LOG_NAME
    start = time.perf_counter()
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - start
    if code != 0:
        tail = log_path.read_text().strip().splitlines()[-8:]
        raise DtrainError(f"training {recipe} into {run_dir} failed (exit {code}); end of {log_path}:\n"
                          + "\n".join(tail))
    echo(f"  done in {seconds:.0f} s ({run_dir})")
    return FinishedRun(run_dir, seconds, command)


def ensure_prepared_digits(root: Path, echo=print) -> None:
    """`dtrain prepare digits --out ROOT` unless ROOT already holds a prepared dataset."""
    if (root / "manifest.parquet").is_file():
        return
    echo(f"preparing the bundled digits into {root} ...")
    command = [sys.executable, "-m", "dtrain", "prepare", "digits", "--out", str(root), "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not (root / "manifest.parquet").is_file():
        raise DtrainError(f"`dtrain prepare digits --out {root}` failed: "
                          + (result.stderr.strip().splitlines() or ["no output"])[-1])
