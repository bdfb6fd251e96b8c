"""Checkpoint composition: registered parts, the format version, the background writer, and the
rule that no checkpoint ever holds non-finite weights or optimiser state."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from dtrain.builders import load_for_inference
from dtrain.checkpoint import CheckpointManager, atomic_save
from dtrain.checkpoint.async_writer import AsyncWriter
from dtrain.checkpoint.format import FORMAT_VERSION, NonFiniteStateError, upgrade
from dtrain.config import to_dict
from dtrain.engine.state import Position
from dtrain.errors import DtrainError
from dtrain.resolve import load_config


def _manager(tmp_path: Path, model: torch.nn.Module, position: Position) -> CheckpointManager:
    manager = CheckpointManager(tmp_path / "ckpts", keep_last=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    manager.register({"model": model, "optimizer": optimizer, "train_state": position})
    return manager


def test_registered_parts_round_trip_and_the_version_is_recorded(tmp_path: Path) -> None:
    model, position = torch.nn.Linear(3, 2), Position(step=5, epoch=1, batches_done=2)
    manager = _manager(tmp_path, model, position)
    path = manager.save_parts(5, extra={"config": {"x": 1}})
    manager.wait()
    state = manager.load(path)
    assert state["format_version"] == FORMAT_VERSION and state["train_state"]["step"] == 5
    with torch.no_grad():
        model.weight.zero_()
    position.step = 0
    manager.restore(state, path)
    assert position.step == 5 and position.batches_done == 2
    assert torch.equal(model.weight, state["model"]["weight"])


def test_version_1_checkpoints_load_and_unknown_versions_are_one_line(tmp_path: Path) -> None:
    v1 = {"model": {}, "step": 7, "epoch": 1, "batches_done": 3, "history": [], "tracker_run_id": "abc"}
    upgraded = upgrade(v1, "old.pt")
    assert upgraded["train_state"]["step"] == 7 and upgraded["tracker"] == {"run_id": "abc"}
    with pytest.raises(DtrainError) as info:
        upgrade({"format_version": 99}, "future.pt")
    message = str(info.value)
    assert "format version 99" in message and "\n" not in message


def test_load_for_inference_reads_a_version_1_checkpoint(tmp_path: Path) -> None:
    from dtrain.builders import build_model

    cfg = load_config("digits_resnet20")
    model = build_model(cfg.model)
    path = tmp_path / "v1.pt"
    atomic_save({"format_version": 1, "model": model.state_dict(), "config": to_dict(cfg), "step": 3}, path)
    loaded = load_for_inference(path, ["eval.mode=center"])
    assert loaded.config.model.name == cfg.model.name and loaded.state["train_state"]["step"] == 3
    pairs = zip(loaded.model.state_dict().values(), model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_non_finite_state_is_never_written_and_names_the_last_good_checkpoint(tmp_path: Path) -> None:
    model, position = torch.nn.Linear(3, 2), Position()
    manager = _manager(tmp_path, model, position)
    good = manager.save_parts(1)
    model.register_buffer("running_var", torch.tensor([1.0, float("inf")]))  # a BN buffer gone bad
    with pytest.raises(NonFiniteStateError) as info:
        manager.save_parts(2)
    assert str(good) in str(info.value) and info.value.exit_code == 1
    assert [step for step, _ in manager.checkpoints()] == [1]


def test_the_writer_runs_one_save_at_a_time_and_reports_its_errors() -> None:
    writer, running, overlaps = AsyncWriter(), [], []
    lock = threading.Lock()

    def job() -> None:
        with lock:
            running.append(1)
            overlaps.append(len(running))
        time.sleep(0.05)
        with lock:
            running.pop()

    for _ in range(3):
        writer.submit(job)
    writer.wait()
    assert overlaps == [1, 1, 1] and not writer.in_flight

    def failing() -> None:
        raise OSError("disk full")

    writer.submit(failing)
    with pytest.raises(OSError, match="disk full"):
        writer.wait()


def test_training_is_blocked_only_for_the_copy(tmp_path: Path, monkeypatch) -> None:
    model, position = torch.nn.Linear(3, 2), Position()
    manager = _manager(tmp_path, model, position)
    release = threading.Event()
    real_save = manager.save

    def slow_save(*args, **kwargs):
        release.wait(10)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(manager, "save", slow_save)
    path = manager.save_parts(1)  # returns while the file is still being written
    assert not path.exists() and manager.writer.in_flight
    with torch.no_grad():
        model.weight.fill_(3.0)  # training goes on: the checkpoint holds the state at save time
    release.set()
    manager.wait()
    assert path.is_file() and not torch.equal(manager.load(path)["model"]["weight"], model.weight)
