"""Weight EMA and stochastic depth across a resume: a run interrupted mid-way and resumed ends with
the same bits as one that never stopped, the EMA weights included; the EMA is evaluated beside the
weights, has its own best_ema.pt, and `dtrain eval --weights ema` gives its error.

The tiny deterministic run of resume_runs.py (CIFAR ResNet-20, synthetic data, 24 steps on CPU)
with EMA every 2 steps and stochastic depth (its masks drawn from torch's global generator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from resume_runs import (
    CRASH_ENV,
    assert_bitwise_equal,
    checkpoint_steps,
    explain,
    final_checkpoint,
    run_train,
    subprocess_env,
    train_in_process,
)

from dtrain.builders import load_for_inference
from dtrain.checkpoint import atomic_load
from dtrain.cli import cli

EMA_RUN = ("ema.enabled=true", "ema.decay=0.8", "ema.every_steps=2", "ema.warmup_epochs=1",
           "model.options.stochastic_depth=0.5", "eval.every_iters=8")


def _assert_ema_equal(resumed: dict, reference: dict) -> None:
    assert resumed["ema"]["updates"] == reference["ema"]["updates"]
    assert resumed["ema"]["weights"].keys() == reference["ema"]["weights"].keys()
    for name, tensor in reference["ema"]["weights"].items():
        assert torch.equal(resumed["ema"]["weights"][name], tensor), f"EMA tensor {name} differs"


@pytest.fixture(scope="module")
def ema_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("ema_reference")
    outcome = train_in_process(run_dir, overrides=EMA_RUN)
    assert outcome.exit_code == 0 and outcome.result.stopped == "finished"
    return run_dir, final_checkpoint(run_dir)


def test_ema_is_evaluated_beside_the_weights_with_its_own_best(ema_reference: tuple[Path, dict]) -> None:
    run_dir, state = ema_reference
    assert state["ema"]["updates"] == 1 + (24 - 8) // 2  # the copy at step 8 ending warm-up epoch 0, 8 averages
    weights, averaged = state["model"], state["ema"]["weights"]
    assert weights.keys() == averaged.keys()
    assert not torch.equal(weights["fc.weight"], averaged["fc.weight"])
    history = state["train_state"]["history"]  # the final checkpoint is written before the final evaluation
    assert [h["step"] for h in history] == [8, 16]
    assert all("top1_err_ema" in h and "top5_err_ema" in h for h in history)
    final = json.loads((run_dir / "final_metrics.json").read_text())
    ema_errors = {h["step"]: h["top1_err_ema"] for h in history} | {24: final["top1_err_ema"]}
    best_ema = min(ema_errors.values())
    assert final["best_top1_err_ema"] == best_ema
    meta = json.loads((run_dir / "checkpoints" / "best_ema.pt.meta.json").read_text())
    assert meta["metric"] == best_ema
    chosen = min(ema_errors, key=lambda step: (ema_errors[step], step))  # the first of equals stays best
    assert atomic_load(run_dir / "checkpoints" / "best_ema.pt")["train_state"]["step"] == chosen


def test_eval_weights_ema_gives_the_ema_error_of_training(ema_reference: tuple[Path, dict]) -> None:
    run_dir, state = ema_reference
    checkpoint = run_dir / "checkpoints" / "ckpt-000000024.pt"
    runner = CliRunner()
    results = {}
    for weights in ("ema", "model"):
        done = runner.invoke(cli, ["eval", str(checkpoint), "--weights", weights, "--json"])
        assert done.exit_code == 0, done.output
        results[weights] = json.loads(done.output.strip().splitlines()[-1])
    final = json.loads((run_dir / "final_metrics.json").read_text())  # the evaluation of step 24
    assert results["ema"]["top1_err"] == pytest.approx(final["top1_err_ema"])
    assert results["model"]["top1_err"] == pytest.approx(final["top1_err"])
    # (the synthetic labels leave both near chance:) that the EMA weights were the ones loaded
    loaded = load_for_inference(checkpoint, weights_of="ema").model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state["ema"]["weights"].items())
    no_ema = run_dir / "no_ema.pt"
    torch.save({key: value for key, value in state.items() if key != "ema"}, no_ema)
    refused = runner.invoke(cli, ["eval", str(no_ema), "--weights", "ema"])
    assert refused.exit_code != 0 and "holds no EMA weights" in str(refused.exception or refused.output)


@pytest.mark.parametrize("signal_step, stop_step", [(3, 4), (10, 12)], ids=["in-warmup", "averaging"])
def test_preempted_then_resumed_is_bitwise_identical_with_ema(tmp_path: Path, ema_reference: tuple[Path, dict],
                                                                signal_step: int, stop_step: int) -> None:
    first = train_in_process(tmp_path, sigterm_at_batch=signal_step, overrides=EMA_RUN)
    assert first.exit_code == 0 and first.result.stopped == "preempted" and first.result.step == stop_step
    second = train_in_process(tmp_path, overrides=EMA_RUN)
    assert second.exit_code == 0 and second.result.stopped == "finished"
    resumed, reference = final_checkpoint(tmp_path), ema_reference[1]
    assert_bitwise_equal(resumed, reference)
    _assert_ema_equal(resumed, reference)
    assert resumed["train_state"]["history"] == reference["train_state"]["history"]


@pytest.mark.slow
def test_hard_kill_then_resume_with_ema_is_bitwise_identical(tmp_path: Path, ema_reference: tuple[Path, dict]) -> None:
    """Killed without cleanup after step 10 (`python -m dtrain.train`, no instrumented loader), then
    resumed; compared with an uninterrupted subprocess run of the same settings."""
    reference_dir, killed = tmp_path / "reference", tmp_path / "killed"
    done = run_train(reference_dir, *EMA_RUN)
    assert done.returncode == 0, explain(done)
    crashed = run_train(killed, *EMA_RUN, env=subprocess_env(**{CRASH_ENV: "10"}))
    assert crashed.returncode != 0 and checkpoint_steps(killed) == [4, 8], explain(crashed)
    resumed = run_train(killed, *EMA_RUN)
    assert resumed.returncode == 0 and "at step 8" in resumed.stdout, explain(resumed)
    assert_bitwise_equal(final_checkpoint(killed), final_checkpoint(reference_dir))
    _assert_ema_equal(final_checkpoint(killed), final_checkpoint(reference_dir))


def test_ema_turned_on_at_a_resume_starts_from_the_restored_weights(tmp_path: Path) -> None:
    """A checkpoint written without EMA, resumed with ema.enabled=true (checkpoint.resume=force:
    the settings changed): the average starts as a copy of the restored weights."""
    first = train_in_process(tmp_path, sigterm_at_batch=3)
    assert first.exit_code == 0 and first.result.step == 4 and "ema" not in atomic_load(
        tmp_path / "checkpoints" / "ckpt-000000004.pt")
    second = train_in_process(tmp_path, overrides=("ema.enabled=true", "ema.decay=0.5", "checkpoint.resume=force"))
    assert second.exit_code == 0 and second.result.stopped == "finished"
    state = final_checkpoint(tmp_path)
    assert state["ema"]["updates"] == 1 + 20  # the copy at the resume, one average per step since
    assert not torch.equal(state["ema"]["weights"]["fc.weight"], state["model"]["fc.weight"])
