"""Exact resume with data.auto_augment on (TrivialAugment-wide, torchvision's and timm's RandAugment): a run preempted
mid-epoch and resumed ends with the bits of the uninterrupted one (tests/integration/resume_runs.py's
harness: weights, optimiser and RNG), because every op is drawn from the sample's (seed, epoch,
index) generator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from resume_runs import (
    assert_bitwise_equal,
    hard_killed_then_resumed,
    preempted_then_resumed,
    uninterrupted,
)


@pytest.mark.parametrize("spec", ["ta_wide", "ra-m9-n2", "rand-m7-mstd0.5-inc1"])
def test_auto_augmented_run_preempted_then_resumed_is_bitwise_identical(tmp_path: Path, spec: str,
                                                                         reference_run_random_op: dict) -> None:
    overrides = (f"data.auto_augment={spec}",)
    reference = uninterrupted(tmp_path / "reference", random_op=True, overrides=overrides)
    # the augmentation changed what was learned (it is on), yet repeats exactly:
    assert any(not torch.equal(reference["model"][k], v) for k, v in reference_run_random_op["model"].items())
    assert_bitwise_equal(preempted_then_resumed(tmp_path / "interrupted", overrides), reference)


@pytest.mark.slow
def test_auto_augmented_run_hard_killed_then_resumed_is_bitwise_identical(tmp_path: Path) -> None:
    """`python -m dtrain.train` with ta_wide, killed without cleanup after step 10 (checkpoint 8 on disk), rerun."""
    overrides = ("data.auto_augment=ta_wide",)
    reference = uninterrupted(tmp_path / "reference", random_op=False, overrides=overrides)
    assert_bitwise_equal(hard_killed_then_resumed(tmp_path / "killed", overrides), reference)
