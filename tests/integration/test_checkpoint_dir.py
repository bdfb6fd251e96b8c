"""A checkpoint.dir the run cannot write is one line and exit 2 before the first step, not a
traceback at start (a file) or after the whole run (read-only: the final save failed)."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from fault_runs import base_args, error_lines, finish, start

PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>, <linux/capability.h>


def test_a_checkpoint_dir_that_is_a_file_is_one_line_before_training(tmp_path: Path) -> None:
    a_file = tmp_path / "ckpt"
    a_file.write_text("not a directory")
    code, output = finish(start([sys.executable, "-m", "dtrain.train", *base_args(tmp_path / "run"),
                                 f"checkpoint.dir={a_file}"], tmp_path / "log"), tmp_path / "log")
    assert code == 2, output[-2000:]
    assert error_lines(output) == [f"Error: checkpoint.dir {a_file} is a file, not a directory; "
                                   "choose another checkpoint.dir"]
    assert " step " not in output  # refused before training
    assert not (tmp_path / "run" / ".dtrain.lock").exists()


def _without_root_override() -> None:
    """Root writes into a mode-555 directory anyway: drop CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from the bounding set, so the exec'd run obeys the mode bits."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_read_only_checkpoint_dir_is_one_line_before_training(tmp_path: Path) -> None:
    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    checkpoints.chmod(0o555)
    as_user = _without_root_override if os.geteuid() == 0 else None
    process = start([sys.executable, "-m", "dtrain.train", *base_args(tmp_path / "run"),
                     f"checkpoint.dir={checkpoints}"], tmp_path / "log", preexec_fn=as_user)
    code, output = finish(process, tmp_path / "log")
    assert code == 2, output[-2000:]
    assert error_lines(output) == [f"Error: cannot write in checkpoint.dir {checkpoints} (Permission denied); "
                                   "choose a writable checkpoint.dir"]
    assert " step " not in output and not list(checkpoints.iterdir())
