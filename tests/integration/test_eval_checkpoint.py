"""`dtrain eval CHECKPOINT` rebuilds the model from the config saved in the checkpoint and gives the
same validation error as the end of training; other modes and bad input behave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from processes import CHECKOUT_PYTHONPATH

from dtrain.cli import cli
from dtrain.resolve import load_config
from dtrain.training import train_config

ROOT = Path(__file__).resolve().parents[2]

TINY = ["data.loader=synthetic", "data.synthetic_samples=24", "data.synthetic_image_size=16",
        "data.crop_size=16", "data.val_resize=16", "data.val_crop=16", "data.workers=0",
        "optim.batch_size=8", "eval.batch_size=12", "schedule.epochs=1", "tracking.backend=jsonl"]


def test_eval_command_matches_the_final_validation_error_of_training(tmp_path):
    outcome = train_config(load_config("digits_resnet20", [*TINY, f"run_dir={tmp_path}"]))
    assert outcome.exit_code == 0
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    checkpoint = tmp_path / "checkpoints" / "ckpt-000000003.pt"
    runner = CliRunner()
    done = runner.invoke(cli, ["eval", str(checkpoint), "--mode", "center", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.output.strip().splitlines()[-1])
    assert result["top1_err"] == pytest.approx(final["top1_err"])
    assert result["samples"] == 24 and result["model"] == "resnet20"

    ten = runner.invoke(cli, ["eval", str(checkpoint), "--mode", "ten-crop", "data.val_crop=12", "--json"])
    assert ten.exit_code == 0, ten.output
    assert json.loads(ten.output.strip().splitlines()[-1])["samples"] == 24

    missing = runner.invoke(cli, ["eval", str(tmp_path / "nope.pt")])
    assert missing.exit_code != 0 and "does not exist" in str(missing.exception or missing.output)


def test_eval_of_a_checkpoint_with_another_model_is_one_line_naming_both(tmp_path):
    """A resnet20 checkpoint evaluated as resnet32: exit 2 and one line, from the real CLI process."""
    outcome = train_config(load_config("digits_resnet20", [*TINY, f"run_dir={tmp_path}", "schedule.epochs=null",
                                                           "schedule.max_iters=1"]))
    assert outcome.exit_code == 0
    checkpoint = tmp_path / "checkpoints" / "ckpt-000000001.pt"
    env = {**os.environ, "PYTHONPATH": CHECKOUT_PYTHONPATH, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": ""}
    done = subprocess.run([sys.executable, "-m", "dtrain", "eval", str(checkpoint), "model.name=resnet32"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not done.stdout.strip()
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: ") and str(checkpoint) in line
    assert "resnet20" in line and "resnet32" in line
