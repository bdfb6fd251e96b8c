"""A run that cannot continue from its checkpoints says how to start afresh, and the way it names
is one that is accepted in that situation: applied as written, the run starts. (checkpoint.resume
=never refuses a directory that holds checkpoints, so it is only suggested where there are none.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from dtrain.checkpoint import atomic_save
from dtrain.train import main

TINY = ["digits_resnet20", "data.loader=synthetic", "data.synthetic_samples=32", "data.synthetic_image_size=16",
        "data.crop_size=16", "data.val_resize=16", "data.val_crop=16", "data.workers=0", "optim.batch_size=8",
        "schedule.epochs=null", "schedule.max_iters=2", "eval.every_epochs=0", "tracking.backend=none",
        "checkpoint.every_iters=1", "checkpoint.every_minutes=0"]


def train(capsys, *overrides: str) -> tuple[int, str]:
    code = main([*TINY, *overrides])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def finished_fresh(run_dir: Path, capsys, *overrides: str) -> None:
    """The run starts (not refused), trains from step 0 to the end and resumes nothing."""
    code, err = train(capsys, f"run_dir={run_dir}", *overrides)
    assert code == 0, err
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["step"] == 2 and final["stopped"] == "finished"
    assert "resumed from" not in err


def refused(capsys, *overrides: str) -> str:
    code, err = train(capsys, *overrides)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("Error: "), err
    return err


def fix_of(message: str) -> list[str]:
    """The overrides the message's start-afresh hint names (values to fill in are '...')."""
    found = re.search(r"to start afresh instead, (?:give the run a new (run_dir|checkpoint\.dir)=\.\.\."
                      r"(?P<never> with checkpoint\.resume=never)?|use (?P<only>checkpoint\.resume=never))", message)
    assert found, message
    if found.group("only"):
        return [found.group("only")]
    return [f"{found.group(1)}=..."] + (["checkpoint.resume=never"] if found.group("never") else [])


def fill(fix: list[str], key: str, value: Path) -> list[str]:
    return [f"{key}={value}" if item == f"{key}=..." else item for item in fix]


@pytest.fixture()
def corrupt_run(tmp_path: Path, capsys) -> Path:
    """A finished run whose every checkpoint was then damaged on disk."""
    run_dir = tmp_path / "run"
    finished_fresh(run_dir, capsys)
    for checkpoint in (run_dir / "checkpoints").glob("ckpt-*.pt"):
        checkpoint.write_bytes(b"not a checkpoint any more")
    return run_dir


def test_all_checkpoints_corrupt_hints_a_new_run_dir_and_that_starts(corrupt_run: Path, tmp_path, capsys) -> None:
    message = refused(capsys, f"run_dir={corrupt_run}")
    assert "every checkpoint in" in message and "is corrupt" in message
    assert "use checkpoint.resume=never" not in message  # refused here: the directory holds checkpoints
    fix = fix_of(message)
    assert fix == ["run_dir=..."]
    finished_fresh(tmp_path / "new", capsys, *fill(fix, "run_dir", tmp_path / "new"))


def test_all_checkpoints_corrupt_moving_them_out_as_told_lets_the_run_start(corrupt_run: Path, tmp_path,
                                                                            capsys) -> None:
    message = refused(capsys, f"run_dir={corrupt_run}")
    assert "move them out of that directory to start this run from scratch" in message
    aside = tmp_path / "aside"
    aside.mkdir()
    for checkpoint in (corrupt_run / "checkpoints").glob("ckpt-*.pt"):
        shutil.move(checkpoint, aside / checkpoint.name)
    (corrupt_run / "final_metrics.json").unlink()
    finished_fresh(corrupt_run, capsys)


def test_with_checkpoint_dir_set_the_hint_names_checkpoint_dir(tmp_path: Path, capsys) -> None:
    shared = tmp_path / "ckpts"
    finished_fresh(tmp_path / "run", capsys, f"checkpoint.dir={shared}")
    for checkpoint in shared.glob("ckpt-*.pt"):
        checkpoint.write_bytes(b"damaged")
    fix = fix_of(refused(capsys, f"run_dir={tmp_path / 'run'}", f"checkpoint.dir={shared}"))
    assert fix == ["checkpoint.dir=..."]  # a new run_dir would keep the same checkpoint.dir
    finished_fresh(tmp_path / "run", capsys, *fill(fix, "checkpoint.dir", tmp_path / "other"))


def test_another_models_checkpoint_in_the_run_dir_hints_a_new_run_dir(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    finished_fresh(run_dir, capsys)
    message = refused(capsys, f"run_dir={run_dir}", "model.name=resnet32", "checkpoint.resume=force")
    assert "written for model resnet20, this run builds resnet32" in message
    fix = fix_of(message)
    assert fix == ["run_dir=..."]
    finished_fresh(tmp_path / "new", capsys, "model.name=resnet32", *fill(fix, "run_dir", tmp_path / "new"))


def test_another_models_checkpoint_given_as_a_path_hints_never_where_never_works(tmp_path: Path, capsys) -> None:
    finished_fresh(tmp_path / "old", capsys)
    path = tmp_path / "old" / "checkpoints" / "ckpt-000000002.pt"
    fresh = tmp_path / "fresh"
    message = refused(capsys, f"run_dir={fresh}", "model.name=resnet32", f"checkpoint.resume={path}")
    fix = fix_of(message)
    assert fix == ["checkpoint.resume=never"]  # the run's own directory holds no checkpoint
    finished_fresh(fresh, capsys, "model.name=resnet32", *fix)


def test_never_among_earlier_checkpoints_names_two_ways_that_both_work(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    finished_fresh(run_dir, capsys)
    message = refused(capsys, f"run_dir={run_dir}", "checkpoint.resume=never")
    assert "give this run a new run_dir=..., or continue that run with checkpoint.resume=auto" in message
    finished_fresh(tmp_path / "new", capsys, f"run_dir={tmp_path / 'new'}", "checkpoint.resume=never")
    code, err = train(capsys, f"run_dir={run_dir}", "checkpoint.resume=auto")
    assert code == 0, err
    assert json.loads((run_dir / "final_metrics.json").read_text())["step"] == 2


def test_a_checkpoint_of_a_future_format_hints_an_accepted_fresh_start(tmp_path: Path, capsys) -> None:
    finished_fresh(tmp_path / "old", capsys)
    future = tmp_path / "future.pt"
    atomic_save({**torch.load(tmp_path / "old" / "checkpoints" / "ckpt-000000002.pt", weights_only=False),
                 "format_version": 99}, future)
    message = refused(capsys, f"run_dir={tmp_path / 'fresh'}", f"checkpoint.resume={future}")
    assert "format version 99" in message and "upgrade dtrain to read it" in message
    fix = fix_of(message)
    assert fix == ["checkpoint.resume=never"]
    finished_fresh(tmp_path / "fresh", capsys, *fix)
