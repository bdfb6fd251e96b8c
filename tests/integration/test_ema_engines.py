"""Weight EMA with both engines on 2 CPU processes under torchrun (gloo): DDP, and DeepSpeed ZeRO-1
(whose module keeps its parameters whole). A job killed mid-way and resumed ends with the same
weights and the same EMA weights as the uninterrupted job.

DeepSpeed's first start JIT-compiles a CPU comm op (about a minute; cached in TORCH_EXTENSIONS_DIR)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dtrain.checkpoint import atomic_load

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

ARGS = ["digits_resnet20", "data.loader=synthetic", "data.synthetic_samples=64", "data.synthetic_image_size=32",
        "data.workers=0", "optim.batch_size=16", "schedule.max_iters=16", "schedule.epochs=null",
        "eval.every_iters=8", "tracking.backend=jsonl", "train.device=cpu", "train.deterministic=true",
        "checkpoint.every_iters=4", "checkpoint.every_minutes=0", "checkpoint.at_epoch_end=false",
        "ema.enabled=true", "ema.decay=0.7", "ema.every_steps=2", "model.options.stochastic_depth=0.3"]
LAST = "ckpt-000000016.pt"
ENGINES = {
    "ddp": ("distributed.engine=ddp",),
    "deepspeed": ("distributed.engine=deepspeed", "distributed.zero_stage=1"),
}


def _train(run_dir: Path, engine: str, crash_at: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DTRAIN_TEST_CRASH_AT_STEP"}
    env.update(OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI="")
    if crash_at is not None:
        env["DTRAIN_TEST_CRASH_AT_STEP"] = str(crash_at)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
               "dtrain.train", *ARGS, *ENGINES[engine], f"run_dir={run_dir}"]
    return subprocess.run(command, env=env, cwd=run_dir.parent, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_killed_job_with_ema_resumes_to_the_same_weights_and_ema(tmp_path: Path, engine: str) -> None:
    if engine == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("DeepSpeed not installed (pip install 'dtrain[deepspeed]')")
    straight = _train(tmp_path / "straight", engine)
    assert straight.returncode == 0, straight.stdout[-3000:] + straight.stderr[-3000:]
    assert "EMA" in straight.stdout  # evaluated beside the weights
    killed = _train(tmp_path / "killed", engine, crash_at=10)
    assert killed.returncode != 0
    resumed = _train(tmp_path / "killed", engine)
    assert resumed.returncode == 0 and "at step 8" in resumed.stdout, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    expected = atomic_load(tmp_path / "straight" / "checkpoints" / LAST)
    got = atomic_load(tmp_path / "killed" / "checkpoints" / LAST)
    for part in ("model", "ema"):
        want = expected[part] if part == "model" else expected[part]["weights"]
        have = got[part] if part == "model" else got[part]["weights"]
        assert want.keys() == have.keys()
        assert [k for k in want if not torch.equal(want[k], have[k])] == [], part
    assert not torch.equal(expected["ema"]["weights"]["fc.weight"], expected["model"]["fc.weight"])
    assert (tmp_path / "killed" / "checkpoints" / "best_ema.pt").is_file()
