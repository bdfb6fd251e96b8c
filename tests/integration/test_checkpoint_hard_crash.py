"""An atomic checkpoint write survives a real process death: the writer is killed (os._exit) after
its temp file is written and fsynced, before the rename (the in-process crash cases are in
tests/unit/test_checkpoint_atomic.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from dtrain.checkpoint import atomic
from dtrain.checkpoint.atomic import atomic_load, atomic_save


def _state(value: float) -> dict:
    return {"w": torch.full((256,), value), "step": int(value)}


def test_hard_crash_before_rename_keeps_old_file(tmp_path: Path) -> None:
    """A real process death (os._exit) after the temp file is written and fsynced."""
    path = tmp_path / "ckpt.pt"
    atomic_save(_state(1.0), path)
    script = textwrap.dedent(
        f"""
        import os, torch
        from dtrain.checkpoint import atomic
        atomic.os.replace = lambda *a: os._exit(9)
        atomic.atomic_save({{"w": torch.full((256,), 2.0), "step": 2}}, {str(path)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == 9, result.stderr.decode()[-2000:]
    leftovers = [p for p in tmp_path.iterdir() if atomic.TEMP_MARKER in p.name]
    assert len(leftovers) == 1  # the dead writer's temp file, fully written but never renamed
    loaded = atomic_load(path)  # the sidecar was removed before the write: old file still loads
    assert loaded["w"][0].item() == 1.0


