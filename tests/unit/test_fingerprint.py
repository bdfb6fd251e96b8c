"""Safe auto-resume: a run directory refuses a resume with changed result-changing settings."""

from __future__ import annotations

import json

import pytest

from dtrain.checkpoint.fingerprint import FINGERPRINT_FILE, check_resume, result_settings
from dtrain.errors import ConfigError
from dtrain.resolve import load_config


def config(tmp_path, *overrides):
    return load_config("digits_resnet20", [f"run_dir={tmp_path}", *overrides])


def with_checkpoint(cfg):
    directory = cfg.resolved_checkpoint_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ckpt-000000002.pt").write_bytes(b"")
    return cfg


def test_first_start_records_the_settings_and_a_same_rerun_resumes(tmp_path) -> None:
    check_resume(config(tmp_path))
    assert (tmp_path / FINGERPRINT_FILE).is_file()
    check_resume(with_checkpoint(config(tmp_path)))
    # Settings that do not change what is learned may change.
    check_resume(config(tmp_path, "data.workers=7", "train.log_every_iters=3", "tracking.backend=none",
                        "checkpoint.every_iters=5", "data.root=/elsewhere"))


def test_changed_settings_are_refused_naming_the_keys_and_the_two_ways_out(tmp_path) -> None:
    check_resume(with_checkpoint(config(tmp_path)))
    with pytest.raises(ConfigError) as caught:
        check_resume(config(tmp_path, "optim.lr=1e-3", "model.options.shortcut=B"))
    message = str(caught.value)
    assert "optim.lr 0.1 -> 0.001" in message and "model.options.shortcut" in message
    assert "run_dir=" in message and "checkpoint.resume=force" in message and "\n" not in message


def test_force_continues_and_records_the_new_settings(tmp_path, caplog) -> None:
    check_resume(with_checkpoint(config(tmp_path)))
    forced = config(tmp_path, "optim.lr=1e-3", "checkpoint.resume=force")
    check_resume(forced)
    assert "optim.lr" in caplog.text
    check_resume(config(tmp_path, "optim.lr=1e-3"))  # the new settings are the run's now
    with pytest.raises(ConfigError):
        check_resume(config(tmp_path))


def test_without_checkpoints_a_changed_rerun_is_a_fresh_start(tmp_path) -> None:
    check_resume(config(tmp_path))
    check_resume(config(tmp_path, "optim.lr=1e-3"))
    with_checkpoint(config(tmp_path))
    with pytest.raises(ConfigError, match="optim.lr 0.001 -> 0.1"):
        check_resume(config(tmp_path))


def test_only_rank_zero_writes(tmp_path) -> None:
    check_resume(config(tmp_path), rank=1)
    assert not (tmp_path / FINGERPRINT_FILE).exists()


def test_result_settings_keep_what_changes_results() -> None:
    keys = set(result_settings(load_config("resnet50")))
    assert {"optim.lr", "model.name", "data.crop_size", "schedule.milestones", "train.seed"} <= keys
    assert not {k for k in keys if k.startswith(("tracking.", "checkpoint.")) or k in ("run_dir", "data.root")}


@pytest.mark.slow  # two short training runs
def test_a_changed_rerun_of_dtrain_train_is_refused_and_force_resumes(tmp_path, capsys) -> None:
    from dtrain.cli import main

    tiny = ["digits_resnet20", "data.loader=synthetic", "data.synthetic_samples=32", "data.workers=0",
            "optim.batch_size=8", "eval.batch_size=16", "schedule.max_iters=2", "tracking.backend=jsonl",
            f"run_dir={tmp_path}"]
    main(["train", *tiny])
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(["train", *tiny, "optim.lr=1e-3"])
    assert refused.value.code == 2
    assert "optim.lr 0.1 -> 0.001" in capsys.readouterr().err
    main(["train", *tiny, "optim.lr=1e-3", "schedule.max_iters=3", "checkpoint.resume=force"])
    assert "resumed from" in capsys.readouterr().out


def test_a_key_added_by_a_newer_dtrain_blocks_a_resume_only_when_set_away_from_its_default(tmp_path) -> None:
    """A run started before loss.name existed (its fingerprint lacks the key) resumes after an
    upgrade, where the key's default is the old behaviour; setting the key is a change."""
    check_resume(with_checkpoint(config(tmp_path)))
    path = tmp_path / FINGERPRINT_FILE
    recorded = json.loads(path.read_text())["settings"]
    old = {"settings": {key: value for key, value in recorded.items() if not key.startswith("loss.")}}
    assert old["settings"] != recorded
    path.write_text(json.dumps(old))
    check_resume(config(tmp_path))
    path.write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=r"loss.label_smoothing \(unset\) -> 0.1"):
        check_resume(config(tmp_path, "loss.label_smoothing=0.1"))
