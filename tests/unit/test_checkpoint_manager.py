"""CheckpointManager: names, retention (last K + best), auto-resume past a corrupt newest one."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from dtrain.checkpoint import CheckpointManager, SavePolicy, checkpoint_name
from dtrain.checkpoint.atomic import meta_path
from dtrain.config import CheckpointConfig
from dtrain.errors import DtrainError


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((64,), float(step))}, "step": step}


def _steps(manager: CheckpointManager) -> list[int]:
    return [step for step, _ in manager.checkpoints()]


def test_names_sort_by_step(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=0, keep_best=False, rank=0)
    for step in (5, 100, 20):
        assert manager.save(_state(step), step).name == checkpoint_name(step)
    assert checkpoint_name(100) == "ckpt-000000100.pt"
    assert _steps(manager) == [5, 20, 100]
    state, path = manager.load_latest()
    assert state["step"] == 100 and path.name == "ckpt-000000100.pt"


def test_empty_directory_resumes_nothing(tmp_path: Path) -> None:
    assert CheckpointManager(tmp_path / "new", keep_last=3, keep_best=True, rank=0).load_latest() is None


def test_retention_keeps_last_k_and_best(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2, keep_best=True, rank=0)
    metrics = {10: 0.9, 20: 0.3, 30: 0.5, 40: 0.6, 50: 0.4}  # best (lowest) at step 20
    for step, metric in metrics.items():
        manager.save(_state(step), step, metric=metric)
    assert _steps(manager) == [40, 50]
    assert not meta_path(tmp_path / checkpoint_name(10)).exists()
    best = manager.load(manager.best_path)
    assert best["step"] == 20 and manager.best_metric() == pytest.approx(0.3)
    # A new manager (a restarted run) still knows the best so far.
    again = CheckpointManager(tmp_path, keep_last=2, keep_best=True, rank=0)
    again.save(_state(60), 60, metric=0.35)
    assert again.load(again.best_path)["step"] == 20
    again.save(_state(70), 70, metric=0.1)
    assert again.load(again.best_path)["step"] == 70


def test_higher_is_better_and_nan_never_best(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1, keep_best=True, rank=0)
    manager.save(_state(1), 1, metric=70.0, lower_is_better=False)
    manager.save(_state(2), 2, metric=float("nan"), lower_is_better=False)
    manager.save(_state(3), 3, metric=60.0, lower_is_better=False)
    assert manager.load(manager.best_path)["step"] == 1


def test_keep_best_false_writes_no_best(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1, keep_best=False, rank=0)
    manager.save(_state(1), 1, metric=0.1)
    assert not manager.best_path.exists()


def test_only_rank_zero_writes(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "ckpts", keep_last=3, keep_best=True, rank=1)
    path = manager.save(_state(5), 5, metric=0.1)
    assert path.name == checkpoint_name(5) and not path.exists()


def test_corrupt_newest_falls_back_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manager = CheckpointManager(tmp_path, keep_last=3, keep_best=False, rank=0)
    for step in (10, 20, 30):
        manager.save(_state(step), step)
    newest = tmp_path / checkpoint_name(30)
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, e.g. a disk filled by something else
    with caplog.at_level(logging.WARNING, logger="dtrain.checkpoint"):
        state, path = manager.load_latest()
    assert state["step"] == 20 and path.name == checkpoint_name(20)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert checkpoint_name(30) in warnings[0] and checkpoint_name(20) in warnings[0]
    # The damaged file is kept for inspection but no longer sorts ahead of the resumed run's files.
    assert (tmp_path / (checkpoint_name(30) + ".corrupt")).exists()
    assert _steps(manager) == [10, 20]


def test_resumed_run_after_corruption_keeps_its_new_checkpoints(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1, keep_best=False, rank=0)
    manager.save(_state(20), 20)
    manager.keep_last = 0
    manager.save(_state(30), 30)
    manager.keep_last = 1
    (tmp_path / checkpoint_name(30)).write_bytes(b"garbage")
    assert manager.load_latest()[0]["step"] == 20
    manager.save(_state(25), 25)  # the resumed run's next checkpoint must survive retention
    assert _steps(manager) == [25]
    assert manager.load_latest()[0]["step"] == 25


def test_every_checkpoint_corrupt_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=3, keep_best=False, rank=0)
    manager.save(_state(1), 1)
    (tmp_path / checkpoint_name(1)).write_bytes(b"not a zip")
    with pytest.raises(DtrainError, match="every checkpoint .* is corrupt") as info:
        manager.load_latest()
    assert info.value.raised_on_every_rank  # printed once by rank 0 under torchrun, not per rank


def test_stale_temp_files_are_removed_and_ignored(tmp_path: Path) -> None:
    CheckpointManager(tmp_path, keep_last=3, keep_best=False, rank=0).save(_state(1), 1)
    stale = tmp_path / f".{checkpoint_name(2)}.tmp-12345"
    stale.write_bytes(b"half written")
    manager = CheckpointManager(tmp_path, keep_last=3, keep_best=False, rank=0)
    assert not stale.exists()
    assert manager.load_latest()[0]["step"] == 1


def test_best_survives_retention_of_its_source(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1, keep_best=True, rank=0)
    manager.save(_state(1), 1, metric=0.1)
    manager.save(_state(2), 2, metric=0.5)
    assert not (tmp_path / checkpoint_name(1)).exists()
    assert torch.equal(manager.load(manager.best_path)["model"]["w"], torch.full((64,), 1.0))
    assert os.stat(manager.best_path).st_nlink >= 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_policy_iterations_and_epoch_end() -> None:
    policy = SavePolicy(CheckpointConfig(every_iters=5, every_minutes=0.0, at_epoch_end=True))
    assert [step for step in range(1, 13) if policy.count_due(step)] == [5, 10]
    assert policy.count_due(13, epoch_end=True)


def test_policy_minutes_restart_at_each_save() -> None:
    clock = FakeClock()
    policy = SavePolicy(CheckpointConfig(every_iters=0, every_minutes=1.0, at_epoch_end=False), clock=clock)
    clock.now = 59.0
    assert not policy.time_due()
    clock.now = 61.0
    assert policy.time_due()
    policy.mark_saved()
    clock.now = 100.0  # the timer restarted at the save (61 s): 39 s is not a minute
    assert not policy.time_due()


def test_policy_all_rules_off() -> None:
    policy = SavePolicy(CheckpointConfig(every_iters=0, every_minutes=0.0, at_epoch_end=False))
    assert not any(policy.count_due(step, epoch_end=True) for step in range(1, 100))
    assert not policy.time_due(now=1e9)
