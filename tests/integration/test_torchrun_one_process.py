"""`torchrun --nproc-per-node 1` forms a process group of one and trains through DDP with sync BN:
the path a one-GPU check (benchmarks/gpu_check.py) uses to exercise NCCL, DDP and SyncBatchNorm
when only one device is lent. A plain `python -m dtrain train` stays a single process without one."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from processes import free_port

from dtrain.tracking.jsonl import JSONL_NAME, metric_history

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.distributed

ARGS = ["digits_resnet20", "data.loader=synthetic", "data.synthetic_samples=32", "data.synthetic_image_size=32",
        "optim.batch_size=16", "schedule.max_iters=2", "schedule.epochs=null", "eval.every_epochs=0",
        "tracking.backend=jsonl", "tracking.metrics_every_iters=1", "train.log_every_iters=1",
        "train.device=cpu", "distributed.sync_bn=true", "checkpoint.every_minutes=0"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHELASTIC_", "RANK", "WORLD_SIZE", "PET_"))}
    env.update(OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI="")
    return env


def _final_loss(run_dir: Path) -> float:
    losses = metric_history(run_dir / JSONL_NAME).get("train/loss", [])
    assert losses, (run_dir / JSONL_NAME).read_text()
    return losses[-1][1]


def test_torchrun_with_one_process_forms_a_group_and_trains(tmp_path):
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", "-m", "dtrain.train", *ARGS,
            f"run_dir={run_dir}"]
    done = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "dtrain rank 0 of 1 (process group gloo) | " in done.stdout + done.stderr
    assert math.isfinite(_final_loss(run_dir))


def test_a_plain_process_forms_no_group(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "dtrain", "train", *ARGS, f"run_dir={run_dir}"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "dtrain rank 0 of 1 (no process group) | " in done.stdout + done.stderr
