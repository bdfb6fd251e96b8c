"""The faults that used to leave `dtrain train` hanging with data.workers=2: the main process
waited in atexit for DataLoader workers that ignore SIGTERM. Each case runs the real command
line, then asserts the exit code, the one line, the process and all its loader workers gone
within a bound, and nothing lost (checkpoints loadable and finite, metrics.jsonl complete)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from fault_runs import (
    assert_checkpoints_sound,
    assert_metrics_complete,
    base_args,
    checkpoint_steps,
    error_lines,
    finish,
    start,
    train,
    wait_for,
)
from prepared_data import write_prepared
from processes import TREE_GONE_SECONDS, free_port, processes_naming

from dtrain.checkpoint.atomic import TEST_DISK_FULL_ENV

WORKERS = "data.workers=2"
# From the fault to the exit. The bug was an hour in atexit; exit_within's safety net now forces
# an exit EXIT_GRACE_SECONDS after main() returns, saying so: the tests fail on that line, and on
# this bound.
EXIT_SECONDS = 30
FORCED_EXIT = "still exiting after"


def train_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "dtrain.train", *args]


def assert_all_gone(run_dir: Path, output: str) -> None:
    """The process exited by itself, no process naming the run dir is left (the session check is
    in finish()), and the run dir's lock is released."""
    assert FORCED_EXIT not in output, output[-2000:]
    deadline = time.monotonic() + TREE_GONE_SECONDS
    while (left := processes_naming(str(run_dir))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes of the run left behind: {left}"
    assert not (run_dir / ".dtrain.lock").exists()


def test_a_disk_full_while_checkpointing_is_one_line_and_the_run_and_its_workers_exit(tmp_path: Path) -> None:
    run_dir, log, disk_full = tmp_path / "run", tmp_path / "log", tmp_path / "disk-full"
    process = start(train_command(base_args(run_dir, WORKERS, "schedule.max_iters=100000", "checkpoint.every_iters=2",
                                            "tracking.metrics_every_iters=1")),
                    log, **{TEST_DISK_FULL_ENV: str(disk_full)})
    wait_for(lambda: checkpoint_steps(run_dir), process, log)
    assert len(processes_naming(str(run_dir))) >= 1 + 2  # the main process and its two loader workers
    disk_full.touch()  # the disk fills up: the next checkpoint write fails with ENOSPC
    filled = time.monotonic()
    code, output = finish(process, log, timeout=EXIT_SECONDS)
    assert time.monotonic() - filled < EXIT_SECONDS
    assert code == 2, output[-2000:]
    assert error_lines(output) == [
        f"Error: no space left to write a checkpoint in {run_dir / 'checkpoints'} (No space left on device); the "
        "previous checkpoints are intact: free disk space, lower checkpoint.keep_last or set checkpoint.dir to "
        "another disk"]
    assert_all_gone(run_dir, output)
    kept = assert_checkpoints_sound(run_dir)
    assert kept and kept[-1] >= 2
    assert_metrics_complete(run_dir, "FAILED", through=kept[-1])


def test_an_unreachable_mlflow_uri_warns_once_and_the_run_finishes_and_exits(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    run_dir = tmp_path / "run"
    started = time.monotonic()
    code, output = train(base_args(run_dir, WORKERS, "tracking.backend=mlflow", "checkpoint.every_iters=2",
                                   f"tracking.uri=http://127.0.0.1:{free_port()}",
                                   "tracking.metrics_every_iters=1"), tmp_path / "log", timeout=120)
    assert code == 0 and not error_lines(output), output[-2000:]
    assert time.monotonic() - started < 60  # training, plus at most the bounded (10 s) flush at exit
    warnings = [line for line in output.splitlines() if " is unreachable " in line and "dtrain rank 0" not in line]
    assert len(warnings) == 1 and "training goes on" in warnings[0]
    (header,) = [line for line in output.splitlines() if line.startswith("dtrain rank 0 of 1")]
    assert header.endswith(" | MLflow is unreachable (connection refused)")  # said where the link would be
    assert (f"MLflow: not reached; metrics are in {run_dir / 'metrics.jsonl'} (send them with: dtrain mlflow-sync "
            f"{run_dir})") in output.splitlines()
    assert_all_gone(run_dir, output)
    assert assert_checkpoints_sound(run_dir)[-1] == 6
    assert_metrics_complete(run_dir, "FINISHED", through=6)


def test_a_shard_deleted_mid_run_is_one_line_and_the_run_and_its_workers_exit(tmp_path: Path) -> None:
    """Two images per shard: by the first step the workers have opened a few of the 100 shards
    (an open one stays readable once deleted); the next batches need ones that are gone."""
    data = write_prepared(tmp_path / "data", counts={"train": 200, "val": 7}, per_shard=2)
    run_dir, log = tmp_path / "run", tmp_path / "log"
    args = ["digits_resnet20", f"data.root={data}", WORKERS, "optim.batch_size=8", "schedule.max_iters=100000",
            "schedule.epochs=null", "eval.every_epochs=0", "tracking.backend=jsonl", f"run_dir={run_dir}",
            "train.device=cpu", "data.crop_size=24", "data.train_augment=pad_crop", "checkpoint.every_iters=1",
            "checkpoint.every_minutes=0", "tracking.metrics_every_iters=1"]
    process = start(train_command(args), log)
    wait_for(lambda: checkpoint_steps(run_dir), process, log)
    assert len(processes_naming(str(run_dir))) >= 1 + 2
    shards = sorted((data / "wds" / "train").glob("*.tar"))
    for shard in shards:
        shard.unlink()
    deleted = time.monotonic()
    code, output = finish(process, log, timeout=EXIT_SECONDS)
    assert time.monotonic() - deleted < EXIT_SECONDS
    assert code == 2, output[-2000:]
    (line,) = error_lines(output)
    assert line.startswith("Error: cannot read the training data: ") and "No such file or directory" in line
    assert any(shard.name in line for shard in shards) and "Traceback" not in output
    assert_all_gone(run_dir, output)
    kept = assert_checkpoints_sound(run_dir)
    assert_metrics_complete(run_dir, "FAILED", through=kept[-1])
