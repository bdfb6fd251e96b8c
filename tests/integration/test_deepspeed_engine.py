"""distributed.engine=deepspeed on 2 CPU processes (gloo): ZeRO-1 with gradient accumulation
trains, writes DeepSpeed checkpoints inside dtrain's, and a run killed mid-way (or preempted by
SIGTERM through torchrun) and resumed ends bitwise equal to the uninterrupted run (model weights,
so the partitioned momentum was restored too). distributed.grad_compression=fp16 becomes
DeepSpeed's communication_data_type and changes the weights (the gradients were rounded).

The first DeepSpeed start on a machine JIT-compiles a CPU comm op (about a minute, more on a busy
machine); it is cached in TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dtrain.checkpoint import atomic_load  # weights only, like every dtrain reader

pytest.importorskip("deepspeed", reason="DeepSpeed not installed (pip install 'dtrain[deepspeed]')")

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

ARGS = ["digits_resnet20", "data.loader=synthetic", "data.synthetic_samples=64", "data.synthetic_image_size=32",
        "data.workers=0", "optim.batch_size=16", "optim.grad_accum=2", "schedule.max_iters=40",
        "schedule.epochs=null", "eval.every_epochs=0", "tracking.backend=jsonl", "train.device=cpu",
        "checkpoint.every_iters=10", "checkpoint.every_minutes=0", "checkpoint.at_epoch_end=false",
        "distributed.engine=deepspeed", "distributed.zero_stage=1"]
LAST = "ckpt-000000040.pt"


def command(run_dir: Path, tmp_path: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
            "dtrain.train", *ARGS, f"run_dir={run_dir}", *extra]


def environment(crash_at: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DTRAIN_TEST_CRASH_AT_STEP"}
    env.update(OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI="")
    if crash_at is not None:
        env["DTRAIN_TEST_CRASH_AT_STEP"] = str(crash_at)  # os._exit(1) after that step: a killed job
    return env


def train(run_dir: Path, tmp_path: Path, crash_at: int | None = None,
          extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(command(run_dir, tmp_path, extra), env=environment(crash_at), cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return atomic_load(path)["model"]


def assert_same_weights(expected_path: Path, got_path: Path) -> None:
    expected, got = weights(expected_path), weights(got_path)
    assert expected.keys() == got.keys()
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run: its checkpoint directory."""
    tmp_path = tmp_path_factory.mktemp("straight")
    result = train(tmp_path / "run", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path / "run" / "checkpoints"


def test_zero1_trains_and_writes_deepspeed_shards_inside_dtrain_checkpoints(straight: Path) -> None:
    assert (straight / LAST).is_file()
    shards = sorted(p.name for p in (straight / "deepspeed" / "step-40").iterdir())
    # ZeRO-1: each of the 2 ranks wrote its own optimiser partition.
    assert [s for s in shards if "optim_states" in s] == ["zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                                         "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    state = atomic_load(straight / LAST)
    assert state["deepspeed"]["tag"] == "step-40"
    assert state["deepspeed"]["config"]["zero_optimization"]["stage"] == 1
    # Retention (keep_last 3 + best) removed the DeepSpeed directories of deleted checkpoints too.
    kept = {p.name for p in straight.glob("ckpt-*.pt")}
    assert {f"ckpt-{int(d.name[5:]):09d}.pt" for d in (straight / "deepspeed").glob("step-*")} == kept


def test_killed_run_resumes_to_the_same_weights(straight: Path, tmp_path: Path) -> None:
    killed = train(tmp_path / "run", tmp_path, crash_at=25)
    assert killed.returncode != 0
    checkpoints = tmp_path / "run" / "checkpoints"
    assert not (checkpoints / LAST).exists() and (checkpoints / "ckpt-000000020.pt").is_file()

    resumed = train(tmp_path / "run", tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at step 20" in resumed.stdout
    # Same weights after 40 steps, so the ZeRO optimiser shards (momentum) came back too.
    assert_same_weights(straight / LAST, checkpoints / LAST)


def test_preempted_run_checkpoints_on_sigterm_and_resumes_to_the_same_weights(straight: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    log = tmp_path / "preempted.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command(run_dir, tmp_path), env=environment(), cwd=tmp_path, stdout=out,
                                   stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while "step 10/40" not in log.read_text():
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)  # torchrun forwards it to both training processes
            process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
    output = log.read_text()
    assert "preempted (SIGTERM)" in output, output[-3000:]
    saved = sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))
    assert saved and saved[-1].name != LAST

    resumed = train(run_dir, tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    assert_same_weights(straight / LAST, run_dir / "checkpoints" / LAST)


def test_fp16_gradient_compression_is_deepspeeds_communication_data_type(straight: Path, tmp_path: Path) -> None:
    result = train(tmp_path / "run", tmp_path, extra=("distributed.grad_compression=fp16",))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = tmp_path / "run" / "checkpoints" / LAST
    assert torch.load(last, map_location="cpu", weights_only=False)["deepspeed"]["config"][
        "communication_data_type"] == "fp16"
    compressed, plain = weights(last), weights(straight / LAST)
    assert all(torch.isfinite(v).all() for v in compressed.values() if v.is_floating_point())
    assert any(not torch.equal(compressed[k], plain[k]) for k in plain)  # the gradients were rounded


# The later recipes' keys through DeepSpeed: torch's AdamW as ZeRO-1's client optimiser over the
# norm/bias-exempt groups, optim.clip_grad_norm as DeepSpeed's gradient_clipping, BCE with label
# smoothing, a linear warm-up of one epoch (4 steps) then cosine.
LATER_RECIPE_KEYS = ("optim.name=adamw", "optim.lr=0.002", "optim.weight_decay=0.05", "optim.no_decay=norm_and_bias",
                     "optim.clip_grad_norm=0.5", "loss.name=bce", "loss.label_smoothing=0.1", "schedule.kind=cosine",
                     "schedule.warmup=linear", "schedule.warmup_epochs=1", "schedule.warmup_lr=0.0")


def test_adamw_clipping_bce_and_cosine_resume_to_the_same_weights(straight: Path, tmp_path: Path) -> None:
    reference = train(tmp_path / "reference", tmp_path, extra=LATER_RECIPE_KEYS)
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]
    last = tmp_path / "reference" / "checkpoints" / LAST
    assert atomic_load(last)["deepspeed"]["config"]["gradient_clipping"] == 0.5
    assert any(not torch.equal(weights(last)[k], weights(straight / LAST)[k]) for k in weights(last))

    killed = train(tmp_path / "run", tmp_path, crash_at=25, extra=LATER_RECIPE_KEYS)
    assert killed.returncode != 0
    resumed = train(tmp_path / "run", tmp_path, extra=LATER_RECIPE_KEYS)
    assert resumed.returncode == 0 and "at step 20" in resumed.stdout, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert_same_weights(last, tmp_path / "run" / "checkpoints" / LAST)
