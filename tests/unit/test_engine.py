"""The training entry point's errors (one line, exit 2) and the NaN/Inf guard."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from dtrain import models
from dtrain.builders import build_engine, build_loaders, start_tracker
from dtrain.distributed.context import DistContext
from dtrain.engine.loop import NonFiniteLossError, Trainer, total_steps
from dtrain.engine.progress import Progress
from dtrain.engine.state import run_checkpoints
from dtrain.resolve import load_config
from dtrain.train import main

TINY = ["data.loader=synthetic", "data.synthetic_samples=32", "data.synthetic_image_size=16",
        "data.crop_size=16", "data.val_resize=16", "data.val_crop=16", "data.workers=0",
        "optim.batch_size=8", "eval.batch_size=16", "tracking.backend=none"]


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("Error: "), err
    return err


def test_batch_that_does_not_divide_is_a_one_line_error(capsys, tmp_path):
    err = _one_line_error(capsys, ["digits_resnet20", *TINY, "optim.batch_size=10", "optim.grad_accum=3",
                                   f"run_dir={tmp_path}"])
    assert "optim.batch_size=10" in err and "multiple of 3" in err


def test_amp_on_cpu_is_a_one_line_error(capsys, tmp_path):
    err = _one_line_error(capsys, ["digits_resnet20", *TINY, "train.amp=fp16", f"run_dir={tmp_path}"])
    assert "train.amp=fp16" in err and "CUDA" in err


def test_unknown_key_and_missing_data_root_are_one_line_errors(capsys, tmp_path):
    assert "optim.lr" in _one_line_error(capsys, ["digits_resnet20", "optim.lrr=0.1"])
    err = _one_line_error(capsys, ["digits_resnet20", f"data.root={tmp_path / 'nothing'}", f"run_dir={tmp_path}"])
    assert "dtrain prepare" in err


class NanAfter(nn.Module):
    """Wraps a model; its output becomes NaN from the `at`-th training forward on."""

    def __init__(self, model: nn.Module, at: int):
        super().__init__()
        self.model, self.at, self.calls = model, at, 0

    def forward(self, x):
        out = self.model(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.at:
                out = out * float("nan")
        return out


@pytest.mark.parametrize("bad_step", [3, 4], ids=["between-sync-points", "at-a-sync-point"])
def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path, bad_step):
    """Syncs happen at the checkpoint steps (2, 4, ...) only: a NaN at step 3 is found at step 4's
    sync, and still named as step 3."""
    cfg = load_config("digits_resnet20", [*TINY, f"run_dir={tmp_path}", "checkpoint.every_iters=2",
                                          "checkpoint.at_epoch_end=false", "schedule.epochs=3",
                                          "train.sync_every=100"])
    ctx = DistContext()
    model = NanAfter(models.build("resnet20", num_classes=10), at=bad_step)
    trainer = Trainer(cfg, ctx, build_engine(cfg, ctx, model), *build_loaders(cfg, ctx, 8),
                      run_checkpoints(cfg, ctx.rank), start_tracker=start_tracker)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.run()
    message = str(info.value)
    assert f"loss is nan at step {bad_step} " in message
    assert str(tmp_path / "checkpoints" / "ckpt-000000002.pt") in message
    weights = torch.load(tmp_path / "checkpoints" / "ckpt-000000002.pt", weights_only=False)["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_total_steps_from_iterations_epochs_and_override():
    cifar = load_config("cifar10_resnet20")
    assert total_steps(cifar, 351) == 64000
    r2 = load_config("resnet200_preact")
    assert total_steps(r2, 5004) == 90 * 5004
    short = load_config("resnet200_preact", ["train.max_epochs_override=2"])
    assert total_steps(short, 5004) == 2 * 5004


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_plain_lines_in_a_log_file_and_a_bar_in_a_terminal():
    log = io.StringIO()
    plain = Progress(total_steps=100, start_step=0, enabled=True, log_every=50, stream=log)
    for step in (1, 50, 99, 100):
        plain.update(step, 0, {"loss": 1.25, "lr": 0.1, "img_per_s": 10.0})
    lines = log.getvalue().splitlines()
    assert [line.split(" loss")[0] for line in lines] == ["epoch 0 step 50/100", "epoch 0 step 100/100"]
    assert "eta 0:00:00" in lines[-1]
    terminal = _Terminal()
    bar = Progress(total_steps=100, start_step=0, enabled=True, log_every=50, stream=terminal)
    bar.update(30, 0, {"loss": 1.25, "lr": 0.1})
    bar.close()
    assert "30/100" in terminal.getvalue() and "\r" in terminal.getvalue()
    silent = io.StringIO()
    Progress(total_steps=10, start_step=0, enabled=False, log_every=1, stream=silent).update(10, 0, {})
    assert silent.getvalue() == ""  # ranks other than 0


def test_resume_never_refuses_an_earlier_runs_checkpoints(tmp_path, capsys):
    """A fresh run among old checkpoints would lose its own to retention: refuse, name the fix."""
    from dtrain.checkpoint import CheckpointManager
    from dtrain.resolve import load_config
    from dtrain.train import main

    run_dir = tmp_path / "run"
    CheckpointManager(run_dir / "checkpoints").save({"step": 7}, step=7)
    args = ["digits_resnet20", "data.loader=synthetic", "data.synthetic_samples=32",
            "data.synthetic_image_size=32", "optim.batch_size=16", "schedule.max_iters=1",
            "tracking.backend=none", f"run_dir={run_dir}", "checkpoint.resume=never", "data.workers=0"]
    load_config(args[0], args[1:])  # the overrides themselves are valid
    assert main(args) == 2
    assert "holds an earlier run's checkpoints (newest ckpt-000000007.pt)" in capsys.readouterr().err
    assert (run_dir / "checkpoints" / "ckpt-000000007.pt").is_file()  # nothing deleted


def test_diverging_run_fails_with_exit_1_and_never_writes_non_finite_weights(tmp_path, capsys):
    """optim.lr=1e6: the weights overflow; every checkpoint kept is finite and the error names the newest."""
    args = ["digits_resnet20", *TINY, "train.device=cpu", "optim.lr=1000000", "checkpoint.every_iters=1",
            "checkpoint.keep_last=2", "schedule.max_iters=12", "train.log_every_iters=3", f"run_dir={tmp_path}"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("not finite" in err or "loss is" in err), err
    kept = sorted((tmp_path / "checkpoints").glob("ckpt-*.pt"))
    assert kept and f"Last good checkpoint: {kept[-1]}" in err
    for path in kept:
        state = torch.load(path, weights_only=False)
        tensors = [*state["model"].values(), *(v for s in state["optimizer"]["state"].values() for v in s.values())]
        assert all(torch.isfinite(t).all() for t in tensors if torch.is_tensor(t) and t.is_floating_point())
