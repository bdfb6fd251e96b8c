"""Opening a checkpoint never runs code from it: dtrain writes tensors and plain values only and
reads with torch.load(weights_only=True); a file holding a pickled Python object is refused in
one line (resume, `dtrain eval`, the analyses), and older dtrain formats still load."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from dtrain.builders import build_model, load_for_inference
from dtrain.checkpoint import CheckpointManager, atomic_load, atomic_save
from dtrain.checkpoint.atomic import UnsafeCheckpoint
from dtrain.checkpoint.format import FORMAT_VERSION, UnusableCheckpoint, upgrade
from dtrain.checkpoint.rng import restore_rng_state
from dtrain.cli import main
from dtrain.config import to_dict
from dtrain.engine.state import Position, RngPart, TrackerPart
from dtrain.resolve import load_config


class _Payload:
    """What a hostile checkpoint carries: unpickling it creates a file (it would run anything)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _hostile(tmp_path: Path, name: str = "ckpt-000000009.pt") -> tuple[Path, Path]:
    cfg = load_config("digits_resnet20")
    marker = tmp_path / "code-ran"
    path = tmp_path / name
    atomic_save({"format_version": FORMAT_VERSION, "config": to_dict(cfg),
                 "model": build_model(cfg.model).state_dict(), "extra": _Payload(marker)}, path)
    return path, marker


def _manager(directory: Path) -> tuple[CheckpointManager, torch.nn.Module, Position]:
    model, position = torch.nn.Linear(3, 2), Position(step=4, history=[{"step": 4, "top1_err": 12.5}])
    manager = CheckpointManager(directory, keep_last=2)
    manager.register({"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                      "train_state": position, "tracker": TrackerPart("run-1"),
                      "rng": RngPart(rank=0, world_size=1, seed=0, position=position)})
    return manager, model, position


def test_what_dtrain_writes_loads_with_weights_only_and_nothing_allowed(tmp_path: Path) -> None:
    manager, _, _ = _manager(tmp_path / "ckpts")
    np.random.normal()  # a cached Gaussian in NumPy's state, too
    path = manager.save_parts(4, extra={"config": to_dict(load_config("digits_resnet20"))}, blocking=True)
    state = torch.load(path, map_location="cpu", weights_only=True)  # no safe globals at all
    assert state["format_version"] == FORMAT_VERSION
    python_rng = state["rng"][0]["python"]
    assert torch.is_tensor(python_rng["internal"]) and python_rng["internal"].dtype == torch.int64


def test_a_checkpoint_holding_a_python_object_is_refused_without_running_it(tmp_path: Path) -> None:
    path, marker = _hostile(tmp_path)
    with pytest.raises(UnsafeCheckpoint) as info:
        atomic_load(path)
    assert not marker.exists()
    message = str(info.value)
    assert "\n" not in message and "weights_only=True" in message and str(path) in message


def test_dtrain_eval_refuses_it_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, marker = _hostile(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(path), "--data-root", str(tmp_path)])
    assert exit_info.value.code == 2 and not marker.exists()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"Error: {path} holds a Python object")


def test_auto_resume_refuses_it_and_leaves_the_file_where_it_is(tmp_path: Path) -> None:
    manager, _, _ = _manager(tmp_path / "ckpts")
    manager.save_parts(4, blocking=True)
    path, marker = _hostile(tmp_path / "ckpts")
    with pytest.raises(UnusableCheckpoint, match="weights_only=True"):
        manager.load_latest()
    assert path.is_file() and not marker.exists()  # not renamed *.corrupt: it is not damaged


def test_a_config_object_from_torch_save_still_loads(tmp_path: Path) -> None:
    cfg = load_config("digits_resnet20")
    model = build_model(cfg.model)
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": model.state_dict(), "cfg": cfg}, path)  # dtrain's config dataclasses: plain data
    loaded = load_for_inference(path, ["eval.mode=center"])
    assert loaded.config.model.name == cfg.model.name


def test_a_version_2_checkpoint_upgrades_and_restores_the_same_python_draws(tmp_path: Path) -> None:
    random.seed(5)
    random.random()
    old_python_state = random.getstate()  # version 2 stored this tuple as it is
    expected = [random.random() for _ in range(3)]
    manager, _, _ = _manager(tmp_path / "ckpts")
    path = manager.save_parts(4, blocking=True)
    state = atomic_load(path)
    state["format_version"] = 2
    state["rng"][0]["python"] = old_python_state
    atomic_save(state, path)
    upgraded = upgrade(atomic_load(path), path)
    assert upgraded["format_version"] == FORMAT_VERSION
    random.seed(99)
    restore_rng_state(upgraded["rng"][0])
    assert [random.random() for _ in range(3)] == expected
