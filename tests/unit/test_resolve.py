"""The one config resolver (dtrain/resolve.py): its stages and the leaf it builds on."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dtrain.config
from dtrain.config import to_dict
from dtrain.errors import ConfigError
from dtrain.resolve import Placement, load_config, saved_config


def test_config_is_a_leaf_and_the_resolver_holds_the_stages() -> None:
    # The dataclasses import nothing of dtrain but its errors: recipes, overrides, smoke mode,
    # device defaults and validation are the resolver's (dtrain/resolve.py), which imports them.
    tree = ast.parse(Path(dtrain.config.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {m for m in imported if m and m.startswith("dtrain")} <= {"dtrain.errors", "dtrain.suggest"}


def test_overrides_of_a_saved_config_leave_the_saved_mapping_as_it_was() -> None:
    saved = to_dict(load_config("digits_resnet20"))
    before = repr(saved)
    cfg = saved_config(saved, ["model.name=cifar_resnet", "model.options.depth=32", "optim.lr=0.5"])
    assert (cfg.model.name, cfg.model.options["depth"], cfg.optim.lr) == ("cifar_resnet", 32, 0.5)
    assert repr(saved) == before  # a checkpoint's state still names the model it holds


def test_resolving_twice_changes_nothing() -> None:
    # A checkpoint's config was resolved once (epoch-keeping schedule, smoke sizes): again is a no-op.
    for recipe, overrides in (("cifar10_resnet1001_preact_b64", []), ("resnet200_preact", ["train.smoke=true"])):
        once = load_config(recipe, overrides)
        assert saved_config(to_dict(once)) == once


def test_the_device_stage_decides_auto_and_the_world_size_stage_the_batch() -> None:
    on_cuda = load_config("resnet50", placement=Placement("cuda", (8, 16)))
    assert (on_cuda.train.amp, on_cuda.train.channels_last, on_cuda.data.loader) == ("bf16", True, "gpu")
    with pytest.raises(ConfigError, match="does not divide by world size 3"):
        load_config("resnet50", placement=Placement("cpu", (8, 3)))
