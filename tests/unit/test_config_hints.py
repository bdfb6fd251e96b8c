"""Config errors whose message names a fix: the fix, applied as written, loads. Synthetic images
smaller than the crop (which used to train silently at 224) and true/false where names go."""

from __future__ import annotations

import re

import pytest

from dtrain.cli import main
from dtrain.errors import ConfigError
from dtrain.recipes import recipe_names
from dtrain.resolve import load_config

SYNTHETIC = ["data.loader=synthetic", "data.workers=0"]


def _error(recipe: str, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(recipe, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_small_synthetic_images_under_a_224_crop_are_refused_with_two_fixes_that_work() -> None:
    small = "data.synthetic_image_size=32"
    message = _error("resnet50", [*SYNTHETIC, small])
    assert "data.synthetic_image_size=32 is smaller than data.crop_size=224" in message
    smoke = re.search(r"use (train\.smoke=true) in place of (data\.synthetic_image_size=32)", message)
    crop = re.search(r"set (data\.crop_size=\d+)", message)
    assert smoke and crop, message
    # Fix 1: smoke mode instead of the size override -> every image size scaled down together.
    cfg = load_config("resnet50", [*SYNTHETIC, smoke.group(1)])
    assert cfg.data.crop_size == cfg.data.synthetic_image_size == 32
    # Fix 2: the crop of the images asked for.
    cfg = load_config("resnet50", [*SYNTHETIC, small, crop.group(1)])
    assert cfg.data.crop_size == cfg.data.synthetic_image_size == 32


def test_a_small_synthetic_size_in_smoke_mode_says_to_drop_it_and_dropping_it_works() -> None:
    message = _error("resnet50", [*SYNTHETIC, "train.smoke=true", "data.synthetic_image_size=64"])
    assert "drop the data.synthetic_image_size override" in message
    assert load_config("resnet50", [*SYNTHETIC, "train.smoke=true"]).data.synthetic_image_size == 32


def test_a_small_synthetic_size_is_one_line_and_exit_2_from_train(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train", "resnet50", *SYNTHETIC, "data.synthetic_image_size=32", f"run_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1 and "train.smoke=true" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_still_runs_on_the_synthetic_loader(recipe: str) -> None:
    load_config(recipe, SYNTHETIC)


def test_amp_false_points_at_amp_none_which_loads(capsys) -> None:
    message = _error("resnet50", ["train.amp=false"])
    fix = re.search(r"use (train\.amp=\w+)", message)
    assert fix and fix.group(1) == "train.amp=none", message
    assert load_config("resnet50", [fix.group(1)]).train.amp == "none"
    with pytest.raises(SystemExit) as exited:
        main(["show-config", "resnet50", "train.amp=false"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1 and "train.amp=none" in err


def test_true_for_a_named_key_lists_the_names_and_free_text_keys_keep_the_plain_error() -> None:
    assert "train.amp must be a name, not true; use one of none, bf16, fp16, auto" in _error(
        "resnet50", ["train.amp=true"])
    assert _error("resnet50", ["description=false"]) == "description must be a string, got False"
