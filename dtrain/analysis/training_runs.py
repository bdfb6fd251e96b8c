"""Run the trainer for an experiment: one `python -m dtrain.train RECIPE overrides...` process
per run, so each run is exactly what a user gets from `dtrain train` (same run dir, checkpoints,
MLflow store), and a crash in one run cannot leave state behind in the next.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dtrain.config import RunConfig, ScheduleConfig
from dtrain.errors import DtrainError
from dtrain.resolve import load_config
from dtrain_prep import layout

LOG_NAME = "train.log"


@dataclass(frozen=True)
class FinishedRun:
    run_dir: Path
    seconds: float
    command: list[str]


def _prepared_json(root: str, name: str) -> dict:
    path = Path(root) / name
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def prepared_summary(root: str) -> dict:
    """ROOT/summary.json of a prepared dataset ({} when there is none or it cannot be read)."""
    return _prepared_json(root, layout.SUMMARY)


def prepared_pixel_stats(root: str) -> dict:
    """ROOT/pixel_stats.json (the mean image's size and geometry), or {}."""
    return _prepared_json(root, layout.PIXEL_STATS)


def full_iterations(config: RunConfig) -> int | None:
    """Iterations of the unshortened recipe: max_iters, or epochs x batches per epoch."""
    if config.schedule.max_iters:
        return config.schedule.max_iters
    summary = prepared_summary(config.data.root)
    train = summary.get("splits", {}).get(config.data.train_split, {}).get("accepted")
    if config.schedule.epochs and train:
        return config.schedule.epochs * (train // config.optim.batch_size)
    return None


@dataclass(frozen=True)
class ShortenedSchedule:
    overrides: list[str]
    description: str  # what the short run's lr does, for the report


# Where a short run drops the lr when the recipe gives no fixed drops to scale (R1 ImageNet's
# plateau rule cannot act within a few hundred iterations): R1 CIFAR's 32k and 48k of 64k.
STAND_IN_DROPS = (0.5, 0.75)


def _drop_fractions(schedule: ScheduleConfig) -> tuple[float, ...] | None:
    """The recipe's lr drops as fractions of its length, or None when it has no fixed drops."""
    if schedule.kind == "step_iters" and schedule.max_iters:
        return tuple(m / schedule.max_iters for m in schedule.milestones)
    if schedule.kind == "step_epochs" and schedule.epochs:
        return tuple(m / schedule.epochs for m in schedule.milestones)
    return None


def shortened_schedule(schedule: ScheduleConfig, budget_iters: int, full_iters: int | None) -> ShortenedSchedule:
    """The recipe's schedule compressed to `budget_iters`, keeping its shape: the warm-up and the lr
    drops at the same fractions of the run (R1 CIFAR: warm-up 400 of 64k, drops at 32k and 48k
    -> 50% and 75%; R2 ImageNet: epochs 30 and 60 of 90). A warm-up keeps at least 1 iteration and
    its criterion (schedule.warmup_until_err), so it never swallows the drops. The budget is in
    iterations at the run's own batch (no epoch-keeping rescaling)."""
    if budget_iters < 4:
        raise DtrainError(f"--budget-iters={budget_iters} is too small; give at least 4 iterations")
    overrides = [f"schedule.max_iters={budget_iters}", "schedule.epochs=null", "schedule.iters_at_batch=null"]
    parts = []
    if schedule.warmup != "none":
        # A warm-up given in epochs keeps its fraction of the recipe's epochs.
        if schedule.warmup_epochs and schedule.epochs:
            fraction: float | None = schedule.warmup_epochs / schedule.epochs
            recipe = f"{schedule.warmup_epochs} of {schedule.epochs} epochs"
        else:
            fraction = schedule.warmup_iters / full_iters if full_iters else None
            recipe = f"{schedule.warmup_iters} of {full_iters or 'an unknown number of'}"
        warmup = max(1, round(fraction * budget_iters)) if fraction else 1
        overrides += [f"schedule.warmup_iters={warmup}", "schedule.warmup_epochs=0"]
        until = f" or until the running training error is below {schedule.warmup_until_err:g}%" \
            if schedule.warmup_until_err is not None else ""
        parts.append(f"{schedule.warmup} warm-up at lr {schedule.warmup_lr:g} for {warmup} iteration(s){until} "
                     f"(recipe: {recipe})")
    if schedule.step_on == "epoch":
        # A short run's epochs are not the recipe's (epochs=null: the budget ends it), so an
        # once-per-epoch staircase would not keep the recipe's shape: the short run steps every iteration.
        overrides.append("schedule.step_on=iteration")
        parts.append("lr updated every iteration (the recipe updates it once per epoch)")
    fractions = _drop_fractions(schedule)
    if schedule.kind in ("step_iters", "step_epochs", "plateau"):
        drops = [max(1, round(f * budget_iters)) for f in (fractions or STAND_IN_DROPS)]
        overrides = ["schedule.kind=step_iters", f"schedule.milestones=[{','.join(map(str, drops))}]", *overrides]
        whence = "at the recipe's fractions of the run" if fractions else \
            f"at 50% and 75% of the run (R1 CIFAR's proportions; the recipe's {schedule.kind} rule has no fixed drops)"
        parts.append(f"lr x {schedule.gamma:g} at iterations {', '.join(map(str, drops))} {whence}")
    else:
        parts.append(f"the recipe's {schedule.kind} schedule over the {budget_iters} iterations")
    return ShortenedSchedule(overrides, f"{budget_iters} iterations: " + "; ".join(parts))


def shorten_recipe(recipe: str, overrides: list[str], budget_iters: int) -> ShortenedSchedule:
    """shortened_schedule of the recipe as `overrides` leave it."""
    config = load_config(recipe, overrides)
    return shortened_schedule(config.schedule, budget_iters, full_iterations(config))


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
