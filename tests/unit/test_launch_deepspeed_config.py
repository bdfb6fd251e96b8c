"""The DeepSpeed config generated from a dtrain recipe (distributed.engine=deepspeed): batch sizes
that match the loaders, ZeRO stage and precision from the config, and override files that may tune
DeepSpeed but not change what the loop is sized for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtrain.engine.deepspeed_engine import deepspeed_config
from dtrain.errors import ConfigError
from dtrain.resolve import Placement, load_config

ROOT = Path(__file__).resolve().parents[2]


def config_for(*overrides: str):
    return load_config("resnet200_preact", ["distributed.engine=deepspeed", *overrides])


def test_batch_sizes_follow_the_global_batch_world_size_and_accumulation() -> None:
    ds = deepspeed_config(config_for("optim.grad_accum=2", "distributed.zero_stage=1"), world_size=32)
    # 256 images per step = 32 processes x 4 images x 2 accumulated micro-batches (DeepSpeed checks this product).
    assert ds["train_batch_size"] == 256
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"] == {"stage": 1}
    assert ds["zero_allow_untested_optimizer"] is True  # torch SGD under ZeRO


@pytest.mark.parametrize("amp, fp16, bf16", [("none", False, False), ("fp16", True, False), ("bf16", False, True)])
def test_precision_comes_from_train_amp(amp: str, fp16: bool, bf16: bool) -> None:
    ds = deepspeed_config(config_for(f"train.amp={amp}"), world_size=8)
    assert ds["fp16"]["enabled"] is fp16 and ds["bf16"]["enabled"] is bf16


def test_override_files_in_launch_deepspeed_merge_over_the_generated_config() -> None:
    zero2 = ROOT / "launch" / "deepspeed" / "zero2.json"
    ds = deepspeed_config(config_for(f"distributed.deepspeed_config={zero2}"), world_size=8)
    assert ds["zero_optimization"]["stage"] == 2 and ds["zero_optimization"]["overlap_comm"] is True
    assert ds["train_batch_size"] == 256  # untouched keys survive the merge
    for path in (ROOT / "launch" / "deepspeed").glob("*.json"):
        deepspeed_config(config_for(f"distributed.deepspeed_config={path}"), world_size=8)  # all usable


def test_an_override_may_not_change_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"gradient_accumulation_steps": 4}))
    with pytest.raises(ConfigError, match="set optim.grad_accum in the recipe"):
        deepspeed_config(config_for(f"distributed.deepspeed_config={path}"), world_size=8)


@pytest.mark.parametrize(
    "overrides, world, message",
    [
        (["distributed.zero_stage=3"], 8, "ZeRO stage 0, 1 or 2"),
        (["distributed.deepspeed_config=/nonexistent/ds.json"], 8, "does not exist"),
    ],
)
def test_bad_settings_are_one_line_config_errors(overrides: list[str], world: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        deepspeed_config(config_for(*overrides), world_size=world)


def test_a_batch_that_does_not_divide_is_refused_before_deepspeed_sees_it() -> None:
    # The resolver checks the world size once (dtrain.resolve); deepspeed_config only divides.
    with pytest.raises(ConfigError, match="does not divide by world size 24"):
        load_config("resnet200_preact", ["distributed.engine=deepspeed"], Placement(world_sizes=(24,)))


def test_invalid_json_override_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{stage: 2")
    with pytest.raises(ConfigError, match=f"{path} is not valid JSON"):
        deepspeed_config(config_for(f"distributed.deepspeed_config={path}"), world_size=8)
