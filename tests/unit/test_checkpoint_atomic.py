"""Atomic checkpoint files: a crash or a full disk never costs the previous checkpoint."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from dtrain.checkpoint import atomic
from dtrain.checkpoint.atomic import CorruptCheckpoint, atomic_load, atomic_save, meta_path
from dtrain.errors import DtrainError


def _state(value: float) -> dict:
    return {"w": torch.full((256,), value), "step": int(value)}


def test_roundtrip_and_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    info = atomic_save(_state(1.0), path, {"step": 1})
    assert info["bytes"] == path.stat().st_size
    assert meta_path(path).is_file()
    loaded = atomic_load(path)
    assert torch.equal(loaded["w"], torch.full((256,), 1.0)) and loaded["step"] == 1
    assert not [p for p in tmp_path.iterdir() if atomic.TEMP_MARKER in p.name]


def test_failure_before_rename_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_save(_state(1.0), path)

    def crash(*args: object) -> None:
        raise RuntimeError("simulated crash between temp write and rename")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        atomic_save(_state(2.0), path)
    monkeypatch.undo()
    assert atomic_load(path)["w"][0].item() == 1.0
    assert not [p for p in tmp_path.iterdir() if atomic.TEMP_MARKER in p.name]


def test_truncated_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_save(_state(1.0), path)
    meta_path(path).unlink()  # without the sidecar, torch.load itself must notice
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpoint, match="ckpt.pt"):
        atomic_load(path)


def test_flipped_byte_is_caught_by_hash(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_save(_state(1.0), path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside tensor bytes: torch.load alone would load garbage
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match="SHA-256"):
        atomic_load(path)


def test_a_lost_sidecar_is_no_free_pass_for_a_flipped_byte(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_save(_state(1.0), path)
    meta_path(path).unlink()
    assert atomic_load(path)["w"][0].item() == 1.0  # intact: the digest in the file agrees
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match="SHA-256 it carries"):
        atomic_load(path)


def test_a_checkpoint_without_trailer_or_sidecar_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"  # written by torch.save alone, as before the trailer existed
    torch.save(_state(2.0), path)
    assert atomic_load(path)["w"][0].item() == 2.0


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DtrainError, match="does not exist"):
        atomic_load(tmp_path / "nope.pt")


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_disk_full_is_one_line_error_and_keeps_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_save(_state(1.0), path)
    real_write = os.write
    calls = {"n": 0}

    def full_disk_write(fd: int, data: object) -> int:
        calls["n"] += 1
        if calls["n"] > 3:  # a few bytes go through, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def full_disk_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "write":
        monkeypatch.setattr(atomic.os, "write", full_disk_write)
    else:
        monkeypatch.setattr(atomic.os, "fsync", full_disk_fsync)
    with pytest.raises(DtrainError) as info:
        atomic_save(_state(2.0), path)
    monkeypatch.undo()
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and "space" in message
    assert not [p for p in tmp_path.iterdir() if atomic.TEMP_MARKER in p.name]
    assert atomic_load(path)["w"][0].item() == 1.0


def test_the_disk_full_test_hook_fails_writes_only_while_its_flag_exists(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """DTRAIN_TEST_DISK_FULL_FLAG, which the process-level fault tests use to fill the disk mid-run."""
    path, flag = tmp_path / "ckpt.pt", tmp_path / "disk-full"
    monkeypatch.setenv(atomic.TEST_DISK_FULL_ENV, str(flag))
    atomic_save(_state(1.0), path)
    flag.touch()
    with pytest.raises(DtrainError, match="no space left to write a checkpoint"):
        atomic_save(_state(2.0), path)
    assert not [p for p in tmp_path.iterdir() if atomic.TEMP_MARKER in p.name]
    assert atomic_load(path)["w"][0].item() == 1.0
    flag.unlink()
    atomic_save(_state(3.0), path)
    assert atomic_load(path)["w"][0].item() == 3.0
