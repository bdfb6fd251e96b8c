"""distributed.grad_compression=fp16 on 2 gloo processes under torchrun: the run trains (its first
step is the uncompressed one's up to fp16 rounding, and not equal to it: the hook was on), and a
run killed after step 10 and resumed ends bitwise equal to the uninterrupted compressed run
(weights, optimiser state, every rank's RNG), as it does without compression.

The tiny run and the bitwise comparison are test_resume's (one definition of each)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from resume_runs import (
    CRASH_ENV,
    RECIPE,
    REPO,
    TOTAL_STEPS,
    assert_bitwise_equal,
    checkpoint_steps,
    explain,
    final_checkpoint,
    subprocess_env,
    tiny_overrides,
)

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

COMPRESSED = "distributed.grad_compression=fp16"


def run_two_processes(run_dir: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "dtrain.train", RECIPE, *tiny_overrides(run_dir, *extra)]
    return subprocess.run(command, cwd=REPO, env=env or subprocess_env(), capture_output=True, text=True,
                          timeout=400)


@pytest.fixture(scope="module")
def compressed_run(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("compressed")
    result = run_two_processes(run_dir, COMPRESSED)
    assert result.returncode == 0, explain(result)
    return final_checkpoint(run_dir)


def test_compressed_run_trains_to_the_end(compressed_run: dict) -> None:
    assert compressed_run["train_state"]["step"] == TOTAL_STEPS
    assert all(torch.isfinite(v).all() for v in compressed_run["model"].values() if v.is_floating_point())


def test_first_step_matches_the_uncompressed_one_within_fp16_rounding(tmp_path: Path) -> None:
    """After one SGD step the weights differ by lr x the gradients' rounding: per tensor, the
    difference is within a few fp16 unit roundoffs of the tensor (of its update, for the BN biases
    that start at 0). Later steps amplify it as any perturbation on random labels does."""
    first = {}
    for name, extra in (("plain", []), ("compressed", [COMPRESSED])):
        result = run_two_processes(tmp_path / name, "schedule.max_iters=1", *extra)
        assert result.returncode == 0, explain(result)
        first[name] = torch.load(tmp_path / name / "checkpoints" / f"ckpt-{1:09d}.pt", map_location="cpu",
                                 weights_only=False)["model"]
    plain, compressed = first["plain"], first["compressed"]
    relative = {k: ((compressed[k] - v).norm() / v.norm()).item() for k, v in plain.items()
                if v.is_floating_point() and v.norm() > 0}
    assert max(relative.values()) > 0  # the gradients were rounded: compression reached DDP
    assert max(relative.values()) < 4 * 2.0**-11, max(relative.items(), key=lambda kv: kv[1])


def test_killed_then_resumed_with_compression_is_bitwise_identical(tmp_path: Path, compressed_run: dict) -> None:
    crashed = run_two_processes(tmp_path, COMPRESSED, env=subprocess_env(**{CRASH_ENV: "10"}))
    assert crashed.returncode != 0, explain(crashed)
    assert checkpoint_steps(tmp_path) == [4, 8]
    resumed = run_two_processes(tmp_path, COMPRESSED)
    assert resumed.returncode == 0, explain(resumed)
    assert "resumed from" in resumed.stdout and "at step 8" in resumed.stdout
    assert_bitwise_equal(final_checkpoint(tmp_path), compressed_run)
