"""Faults injected as an operator meets them. Each case asserts the exit code, the one line the
user sees, that the whole process tree (loader workers, torchrun's workers) is gone within a
bound, and that nothing is lost. The default suite runs the fast ones; the rest are slow."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_runs import (
    all_finite,
    assert_checkpoints_sound,
    assert_metrics_complete,
    base_args,
    error_lines,
    metric_records,
    start,
    train,
)
from prepared_data import write_prepared
from processes import assert_gone, assert_tree_gone, checkout_env, children, descendants


def test_a_truncated_shard_is_one_line_and_the_loader_workers_do_not_hold_the_exit(tmp_path: Path) -> None:
    data = write_prepared(tmp_path / "data", counts={"train": 40, "val": 7}, per_shard=5)
    shard = sorted((data / "wds" / "train").glob("*.tar"))[3]
    shard.write_bytes(shard.read_bytes()[:700])  # a copy cut short after training started
    started = time.monotonic()
    code, output = train(["digits_resnet20", f"data.root={data}", "data.workers=2", "optim.batch_size=8",
                          "schedule.max_iters=20", "schedule.epochs=null", "eval.every_epochs=0",
                          "tracking.backend=jsonl", f"run_dir={tmp_path / 'run'}", "train.device=cpu",
                          "data.crop_size=24", "data.train_augment=pad_crop"], tmp_path / "log")
    assert code == 2, output[-2000:]
    assert error_lines(output) == [line for line in output.splitlines() if "cannot read the training data" in line]
    assert shard.name in output and "Traceback" not in output
    assert time.monotonic() - started < 120  # it used to hang in atexit for an hour
    assert not (tmp_path / "run" / ".dtrain.lock").exists()


@pytest.mark.slow  # tests/unit/test_run_lock.py covers the lock itself in the default suite
def test_a_second_run_into_a_busy_run_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom dtrain.checkpoint.run_lock import "
                               f"lock_run_dir\nlock_run_dir({str(run_dir)!r}); print('held', flush=True); "
                               "time.sleep(120)"], env=checkout_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, output = train(base_args(run_dir), tmp_path / "log")
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    (line,) = error_lines(output)
    assert f"PID {holder.pid}" in line and "in use by another run" in line
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.jsonl").exists()


@pytest.mark.slow
def test_a_run_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.write_text("not a directory")
    code, output = train(base_args(run_dir), tmp_path / "log")
    assert code == 2
    assert error_lines(output) == [f"Error: run_dir {run_dir} is a file, not a directory; choose another run_dir"]


@pytest.mark.slow
def test_sigterm_with_loader_workers_checkpoints_and_exits_promptly(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = start([sys.executable, "-m", "dtrain.train", *base_args(run_dir, "schedule.max_iters=100000",
                                                                       "data.workers=2", "eval.every_iters=2")],
                    tmp_path / "log")
    deadline = time.monotonic() + 120
    while "val top-1 err" not in (tmp_path / "log").read_text():  # an evaluation done, then the signal
        assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "log").read_text()[-2000:]
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGTERM)  # what Slurm and Kubernetes do: the whole group
    assert process.wait(timeout=60) == 0
    assert_tree_gone(process.pid)
    output = (tmp_path / "log").read_text()
    assert "preempted" in output and "val top-1 err" in output  # it had evaluated before the signal
    assert "validation: top-1" not in output  # the summary does not pass an old evaluation off as final
    assert sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))


@pytest.mark.slow
def test_a_silent_mlflow_server_stalls_nothing_and_mlflow_sync_sends_everything_later(tmp_path: Path,
                                                                                     silent_server) -> None:
    pytest.importorskip("mlflow")
    run_dir = tmp_path / "run"
    args = base_args(run_dir, "tracking.backend=mlflow", f"tracking.uri=http://127.0.0.1:{silent_server.port}",
                     "tracking.metrics_every_iters=1", "checkpoint.every_iters=2")
    started = time.monotonic()
    code, output = train(args, tmp_path / "log")
    assert code == 0, output[-2000:]
    assert time.monotonic() - started < 90  # training, plus at most the bounded flush at exit
    assert "MLflow run None" not in output and f"dtrain mlflow-sync {run_dir}" in output
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sync = subprocess.run([sys.executable, "-m", "dtrain.cli", "mlflow-sync", str(run_dir), "--uri", store],
                          env=checkout_env(), capture_output=True, text=True, timeout=300)
    assert sync.returncode == 0, sync.stderr[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(1, 7))


@pytest.mark.slow
@pytest.mark.distributed
def test_killing_the_torchrun_agent_takes_its_workers_and_their_loader_workers_along(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "dtrain.train", *base_args(run_dir, "schedule.max_iters=100000", "data.workers=2",
                                                  "checkpoint.every_iters=5")]
    agent = start(torchrun, tmp_path / "log")
    deadline = time.monotonic() + 180
    while not list((run_dir / "checkpoints").glob("ckpt-*.pt")):
        assert time.monotonic() < deadline and agent.poll() is None, (tmp_path / "log").read_text()[-3000:]
        time.sleep(0.2)
    tree = descendants(agent.pid)
    assert len(tree) >= 2 + 2 * 2  # workers and their loader workers
    os.kill(agent.pid, signal.SIGKILL)  # the agent alone: no chance to stop its workers
    agent.wait()
    assert_gone(tree)
    newest = sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))[-1]
    time.sleep(3)
    assert sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))[-1] == newest  # nobody trains on


@pytest.mark.slow
@pytest.mark.distributed
def test_a_config_error_under_torchrun_says_once_that_restarts_cannot_fix_it(tmp_path: Path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "--max-restarts", "1", "-m", "dtrain.train", *base_args(tmp_path / "run", "optim.lrr=0.1")]
    process = start(torchrun, tmp_path / "log")
    assert process.wait(timeout=180) != 0
    assert_tree_gone(process.pid)
    output = (tmp_path / "log").read_text()
    lines = [line for line in output.splitlines() if "unknown config key optim.lrr" in line]
    assert lines and all("restarts cannot fix it" in line for line in lines)
    assert len(lines) <= 2  # rank 0 only, once per attempt (torchrun retries whatever the code)


@pytest.mark.slow
@pytest.mark.distributed
def test_a_killed_worker_on_one_node_is_restarted_and_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "--max-restarts", "2", "-m", "dtrain.train",
                *base_args(run_dir, "schedule.max_iters=30", "checkpoint.every_iters=2")]
    agent = start(torchrun, tmp_path / "log")
    deadline = time.monotonic() + 180
    while not (run_dir / "checkpoints" / "ckpt-000000002.pt").exists():
        assert time.monotonic() < deadline and agent.poll() is None, (tmp_path / "log").read_text()[-3000:]
        time.sleep(0.1)
    workers = children(agent.pid)
    os.kill(workers[-1], signal.SIGKILL)
    killed = time.monotonic()
    assert agent.wait(timeout=300) == 0, (tmp_path / "log").read_text()[-3000:]
    assert time.monotonic() - killed < 240
    assert_tree_gone(agent.pid)
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["step"] == 30 and "resumed from" in (tmp_path / "log").read_text()


def test_a_diverged_run_stops_at_the_nan_and_a_rerun_at_a_sane_lr_resumes_from_a_finite_checkpoint(
        tmp_path: Path) -> None:
    """R1's warm-up (lr 0.1 for 10 steps, checkpointed) into optim.lr=1e6: the loss is NaN a few
    steps later, before the next checkpoint. The rerun at lr 0.1 follows the refusal's advice."""
    run_dir = tmp_path / "run"
    common = base_args(run_dir, "schedule.max_iters=30", "checkpoint.every_iters=10", "checkpoint.at_epoch_end=false",
                       "schedule.warmup=constant", "schedule.warmup_iters=10", "schedule.warmup_lr=0.1",
                       "train.sync_every=1", "tracking.metrics_every_iters=1")
    code, output = train([*common, "optim.lr=1000000"], tmp_path / "diverged.log")
    assert code == 1, output[-2000:]
    (line,) = error_lines(output)
    last_good = run_dir / "checkpoints" / "ckpt-000000010.pt"
    assert re.fullmatch(rf"Error: loss is (nan|inf|-inf) at step 1[1-9] .*Last good checkpoint: "
                        rf"{re.escape(str(last_good))}\. Lower optim.lr or check the data", line), line
    assert assert_checkpoints_sound(run_dir) == [10]  # nothing written after the warm-up: the NaN came first
    nan_step = int(line.split(" at step ")[1].split()[0])
    assert not all_finite(assert_metrics_complete(run_dir, "FAILED", through=nan_step))

    code, output = train([*common, "optim.lr=0.1"], tmp_path / "refused.log")
    assert code == 2 and error_lines(output) == [line for line in output.splitlines() if "optim.lr" in line]
    assert "checkpoint.resume=force" in error_lines(output)[0]  # what the refusal says to do, done next
    code, output = train([*common, "optim.lr=0.1", "checkpoint.resume=force"], tmp_path / "rerun.log")
    assert code == 0 and not error_lines(output), output[-2000:]
    assert f"resumed from {last_good} at step 10" in output
    rerun = metric_records(run_dir)
    rerun = rerun[max(i for i, r in enumerate(rerun) if r["type"] == "run"):]  # the rerun's own records
    assert all_finite(assert_metrics_complete(run_dir, "FINISHED", through=30, records=rerun, first=11))
    assert json.loads((run_dir / "final_metrics.json").read_text())["step"] == 30
    assert assert_checkpoints_sound(run_dir)[-1] == 30
