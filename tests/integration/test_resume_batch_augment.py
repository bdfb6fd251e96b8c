"""Exact resume with the batch augmentations on: mixup + CutMix + random erasing + the
repeated-augmentation sampler + flip TTA, preempted mid-epoch and resumed, ends with the bits of
the uninterrupted run (tests/integration/resume_runs.py's harness: weights, optimiser and RNG); and
the same run hard-killed as a separate process, and as 2 processes under torchrun (slow: interpreter
start-ups)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from resume_runs import (
    CRASH_ENV,
    assert_bitwise_equal,
    explain,
    final_checkpoint,
    hard_killed_then_resumed,
    preempted_then_resumed,
    run_torchrun,
    subprocess_env,
    uninterrupted,
)

AUGMENTED = ("augment.mixup_alpha=0.2", "augment.cutmix_alpha=1.0", "augment.erasing_prob=0.5",
             "data.repeated_augment_reps=2", "eval.flip_tta=true")


def test_augmented_run_preempted_then_resumed_is_bitwise_identical(tmp_path: Path,
                                                                   reference_run_random_op: dict) -> None:
    reference = uninterrupted(tmp_path / "reference", random_op=True, overrides=AUGMENTED)
    # the augmentations changed what was learned (they are on), yet repeat exactly:
    assert any(not torch.equal(reference["model"][k], v) for k, v in reference_run_random_op["model"].items())
    assert_bitwise_equal(preempted_then_resumed(tmp_path / "interrupted", AUGMENTED), reference)


@pytest.mark.slow
def test_augmented_run_hard_killed_then_resumed_is_bitwise_identical(tmp_path: Path) -> None:
    """`python -m dtrain.train` killed without cleanup after step 10 (checkpoint 8 on disk), rerun."""
    reference = uninterrupted(tmp_path / "reference", random_op=False, overrides=AUGMENTED)
    assert_bitwise_equal(hard_killed_then_resumed(tmp_path / "killed", AUGMENTED), reference)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_augmented_run_killed_then_resumed_is_bitwise_identical(tmp_path: Path) -> None:
    """2 ranks: each mixes its own batch, erases its rows of the global batch, reads its share of
    the repeated order; killed after step 10 on every rank, resumed from step 8."""
    reference = run_torchrun(tmp_path / "reference", overrides=AUGMENTED)
    assert reference.returncode == 0, explain(reference)
    run_dir = tmp_path / "killed"
    crashed = run_torchrun(run_dir, env=subprocess_env(**{CRASH_ENV: "10"}), overrides=AUGMENTED)
    assert crashed.returncode != 0, explain(crashed)
    resumed = run_torchrun(run_dir, overrides=AUGMENTED)
    assert resumed.returncode == 0, explain(resumed)
    state = final_checkpoint(run_dir)
    assert len(state["rng"]) == 2
    assert_bitwise_equal(state, final_checkpoint(tmp_path / "reference"))
