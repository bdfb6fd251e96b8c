"""Exact resume with the later recipes' loss, optimiser and schedule keys on: LAMB + BCE (label
smoothing, target threshold) + linear warm-up in epochs + cosine, AdamW + smoothed
cross-entropy + warm-up in iterations + linear decay, both with no decay on norm/bias parameters
and gradient clipping, and SGD with an lr held per epoch (schedule.step_on=epoch). Preempted (in
this process), hard-killed (a subprocess) and on 2 processes, each resumed run ends with the same
bits as the uninterrupted one (the harness of test_resume: tiny CIFAR ResNet-20 on synthetic data,
24 steps = 3 epochs of 8, a checkpoint every 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from resume_runs import (
    CRASH_ENV,
    assert_bitwise_equal,
    checkpoint_steps,
    explain,
    final_checkpoint,
    run_torchrun,
    run_train,
    subprocess_env,
    train_in_process,
)

COMMON = ("optim.no_decay=norm_and_bias", "schedule.warmup=linear", "schedule.warmup_lr=0.0")
RECIPES = {
    # The warm-up is the first epoch (8 steps): a resume from step 8 starts exactly at the cosine's peak.
    "lamb_bce_cosine": (*COMMON, "optim.name=lamb", "optim.lr=0.01", "optim.weight_decay=0.02",
                        "optim.clip_grad_norm=1.0", "loss.name=bce", "loss.label_smoothing=0.1",
                        "loss.bce_target_threshold=0.2", "schedule.kind=cosine", "schedule.warmup_epochs=1"),
    # A resume from step 4 lands inside the 6-step warm-up.
    "adamw_smoothing_linear": (*COMMON, "optim.name=adamw", "optim.lr=0.002", "optim.weight_decay=0.05",
                               "optim.clip_grad_norm=0.5", "loss.label_smoothing=0.1", "schedule.kind=linear",
                               "schedule.warmup_iters=6", "schedule.min_lr=1e-5"),
    # torchvision's and timm's per-epoch staircase, the cosine counted from step 0 (timm): the lr is a
    # function of the epoch, so a resume inside an epoch (step 4) must keep that epoch's value.
    "sgd_epoch_staircase": (*COMMON, "optim.name=sgd", "optim.lr=0.05", "optim.weight_decay=1e-4",
                            "schedule.kind=cosine", "schedule.warmup_epochs=1", "schedule.warmup_lr=0.005",
                            "schedule.step_on=epoch", "schedule.decay_over=whole_run"),
}


@pytest.fixture(scope="module", params=list(RECIPES))
def recipe(request, tmp_path_factory) -> tuple[tuple[str, ...], dict]:
    """The recipe's overrides and its uninterrupted run's final checkpoint."""
    overrides = RECIPES[request.param]
    run_dir = tmp_path_factory.mktemp(request.param)
    outcome = train_in_process(run_dir, overrides=overrides)
    assert outcome.exit_code == 0 and outcome.result.stopped == "finished"
    return overrides, final_checkpoint(run_dir)


def test_preempted_then_resumed_is_bitwise_identical(tmp_path: Path, recipe) -> None:
    overrides, reference = recipe
    first = train_in_process(tmp_path, sigterm_at_batch=6, overrides=overrides)  # stops at the sync point, step 8
    assert first.result.stopped == "preempted" and first.result.step == 8
    second = train_in_process(tmp_path, overrides=overrides)
    assert second.exit_code == 0 and second.result.stopped == "finished"
    assert_bitwise_equal(final_checkpoint(tmp_path), reference)


def test_the_optimiser_state_is_in_the_checkpoint(recipe) -> None:
    overrides, reference = recipe
    slots = set(next(iter(reference["optimizer"]["state"].values())))
    moments = {"exp_avg", "exp_avg_sq"} if "optim.name=sgd" not in overrides else {"momentum_buffer"}
    assert moments <= slots  # AdamW's and LAMB's moments, SGD's momentum, resume
    assert [g["weight_decay"] for g in reference["optimizer"]["param_groups"]] == [
        float(next(o for o in overrides if o.startswith("optim.weight_decay=")).split("=")[1]), 0.0]


@pytest.mark.slow
def test_hard_killed_then_resumed_is_bitwise_identical(tmp_path: Path, recipe) -> None:
    overrides, _ = recipe
    reference = run_train(tmp_path / "reference", *overrides, env=subprocess_env())
    assert reference.returncode == 0, explain(reference)
    crashed = run_train(tmp_path / "killed", *overrides, env=subprocess_env(**{CRASH_ENV: "6"}))
    assert crashed.returncode != 0 and checkpoint_steps(tmp_path / "killed") == [4], explain(crashed)
    resumed = run_train(tmp_path / "killed", *overrides)
    assert resumed.returncode == 0 and "at step 4" in resumed.stdout, explain(resumed)
    assert_bitwise_equal(final_checkpoint(tmp_path / "killed"), final_checkpoint(tmp_path / "reference"))


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_kill_then_resume_is_bitwise_identical(tmp_path: Path, recipe) -> None:
    overrides, _ = recipe
    reference = run_torchrun(tmp_path / "reference", overrides=overrides)
    assert reference.returncode == 0, explain(reference)
    crashed = run_torchrun(tmp_path / "killed", env=subprocess_env(**{CRASH_ENV: "10"}), overrides=overrides)
    assert crashed.returncode != 0 and checkpoint_steps(tmp_path / "killed") == [4, 8], explain(crashed)
    resumed = run_torchrun(tmp_path / "killed", overrides=overrides)
    assert resumed.returncode == 0, explain(resumed)
    state = final_checkpoint(tmp_path / "killed")
    assert len(state["rng"]) == 2
    assert_bitwise_equal(state, final_checkpoint(tmp_path / "reference"))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[int, dict]:
    outcome = train_in_process(tmp_path_factory.mktemp("baseline"), random_op=False)
    assert outcome.exit_code == 0
    return outcome.result.step, final_checkpoint(outcome.result.run_dir)["model"]


@pytest.mark.parametrize("overrides", [
    ("loss.name=bce",), ("loss.label_smoothing=0.1",), ("optim.name=adamw", "optim.lr=0.001"),
    ("optim.name=lamb", "optim.lr=0.001"), ("optim.clip_grad_norm=0.01",), ("optim.no_decay=norm_and_bias",),
    ("schedule.kind=cosine",), ("schedule.kind=linear",), ("schedule.warmup=linear", "schedule.warmup_epochs=1"),
], ids=lambda o: " ".join(o))
def test_each_key_reaches_the_training_run(tmp_path: Path, baseline, overrides: tuple[str, ...]) -> None:
    """Each key changes what a run learns: the trainer uses it (the same run without it is the baseline)."""
    steps, weights = baseline
    outcome = train_in_process(tmp_path, random_op=False, overrides=overrides)
    assert outcome.exit_code == 0 and outcome.result.step == steps
    changed = final_checkpoint(tmp_path)["model"]
    assert any(not torch.equal(changed[k], weights[k]) for k in weights if weights[k].is_floating_point())
