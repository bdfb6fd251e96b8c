"""The one config resolver: a recipe (or the config a checkpoint saved) plus `key=value` overrides
in, the RunConfig a run uses out. Its stages, in this order:

    overrides    the recipe's YAML (with the files it `extends:`) <- key=value (parse_override,
                 the one override parser of every command and of `dtrain k8s render`)
    types        the dataclasses (dtrain.config.from_dict), renamed keys read as their new names
                 (dtrain.config_renames); a bad key names the file holding it
    derived      settings that follow from others: epoch-keeping schedules (lr_schedule.keep_epochs)
    smoke        train.smoke=true: every image size scaled down together (dtrain.smoke)
    device       `auto` of train.amp / channels_last / data.loader (dtrain.device_defaults), once
                 the device is known (Placement.device_type)
    validation   every value (dtrain.validation)
    world size   the global batch divides over every world size the job may run at (Placement)

Validation runs before the world-size check, which divides by optim.grad_accum: a value it
rejects (grad_accum=0) is reported as the bad value it is.

`python -m dtrain.train` / `dtrain train` resolve without a placement (one line for a typo before
any process group exists), then `place` the config once the process group says where it runs;
`dtrain eval` and the analyses resolve a checkpoint's config (saved_config); `dtrain reproduce`,
`dtrain show-config` and `dtrain k8s render` (every world size from minNodes to nodes) call
load_config. Standard library and dtrain's torch-free modules only: describing a recipe imports
no torch (the registries that validation reads are imported when a config is checked).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dtrain import yaml12
from dtrain.config import BoolForString, RunConfig, from_dict
from dtrain.config_renames import renamed
from dtrain.device_defaults import apply_device_defaults
from dtrain.engine.lr_schedule import keep_epochs
from dtrain.errors import ConfigError
from dtrain.recipes import find_recipe, load_recipe_yaml, recipe_layers
from dtrain.resources import shown_path
from dtrain.smoke import smoke_config
from dtrain.validation import bool_for_name_hint, validate


@dataclass(frozen=True)
class Placement:
    """Where a run executes, as far as it is known: decides the device defaults and which world
    sizes the global batch must divide over."""

    device_type: str | None = None  # "cuda" | "cpu"; None: leave `auto` as it is
    world_sizes: tuple[int, ...] = ()


# -- overrides ------------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A value typed after `key=`: YAML 1.2 scalars and flow collections (dtrain.yaml12), the text
    itself where it is not YAML (`run_name=a: b`), and "" for nothing."""
    if not text.strip():
        return ""
    try:
        return yaml12.load(text)
    except yaml.YAMLError:
        return text


def parse_override(text: str) -> tuple[str, Any]:
    """`optim.lr=0.2` -> ("optim.lr", 0.2)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. optim.lr=0.2")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key before '='")
    return key, parse_value(value_text)


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """raw[a][b][c] = value for "a.b.c". Sections on the way are copied, never changed in place:
    `raw` may share them with a checkpoint's state."""
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        child = node.get(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is a value, not a section")
        node[part] = node = dict(child)
    node[leaf] = value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of `raw` with every `key=value` applied in order (later ones win)."""
    raw = dict(raw)
    for override in overrides:
        set_dotted(raw, *parse_override(override))
    return raw


# -- types ----------------------------------------------------------------------------------------


def typed(raw: dict[str, Any]) -> RunConfig:
    """The RunConfig of a mapping, types checked (not values). true/false where a key takes
    registry names says what to write instead (train.amp=false -> train.amp=none)."""
    try:
        config: RunConfig = from_dict(RunConfig, renamed(raw))
    except BoolForString as exc:
        hint = bool_for_name_hint(exc.key, exc.value)
        if not hint:
            raise
        raise ConfigError(f"{exc.key} must be a name, not {str(exc.value).lower()}{hint}") from None
    return config


def _typed_recipe(path: Path, raw: dict[str, Any]) -> RunConfig:
    """typed(raw); a bad key or type written in a recipe file (or a file it extends) names that
    file, one written on the command line does not need to."""
    try:
        return typed(raw)
    except ConfigError:
        for source, layer in recipe_layers(path):
            try:
                typed(layer)
            except ConfigError as exc:
                raise ConfigError(f"{shown_path(source)}: {exc}") from None
        raise


# -- the pipeline ---------------------------------------------------------------------------------


def derive(config: RunConfig) -> RunConfig:
    """Derived settings and smoke mode: the config as the recipe means it at its own batch size."""
    config = dataclasses.replace(config, schedule=keep_epochs(config.schedule, config.optim.batch_size))
    return smoke_config(config) if config.train.smoke else config


def place(config: RunConfig, placement: Placement = Placement()) -> RunConfig:
    """The last stages: device defaults (when the device is known), validation of every value,
    then the world-size checks."""
    if placement.device_type is not None:
        config = apply_device_defaults(config, placement.device_type)
    validate(config)
    for world_size in placement.world_sizes:
        check_world_size(config, world_size)
    return config


def recipe_config(recipe: str, overrides: Iterable[str] = ()) -> RunConfig:
    """A recipe (name or YAML path) plus overrides, resolved up to the values (not checked, which
    needs the registries and so torch): enough to describe a recipe, as `dtrain recipes` does."""
    path = find_recipe(recipe)
    raw = load_recipe_yaml(path)
    raw.setdefault("recipe", path.stem)
    return derive(_typed_recipe(path, apply_overrides(raw, overrides)))


def load_config(recipe: str, overrides: Iterable[str] = (), placement: Placement = Placement()) -> RunConfig:
    """A recipe (name or YAML path) plus `a.b=value` overrides, through every stage."""
    return place(recipe_config(recipe, overrides), placement)


def saved_config(raw: dict[str, Any], overrides: Iterable[str] = (), placement: Placement = Placement()) -> RunConfig:
    """The config a checkpoint saved (already resolved once: resolving it again changes nothing)
    plus overrides, through every stage."""
    return place(derive(typed(apply_overrides(raw, overrides))), placement)


# -- checks of a run against its surroundings -----------------------------------------------------


def check_world_size(config: RunConfig, world_size: int) -> int:
    """The per-process batch; a global batch that does not divide by the world size is an error."""
    accum = config.optim.grad_accum
    global_batch = config.optim.batch_size
    if global_batch % (world_size * accum):
        raise ConfigError(
            f"optim.batch_size={global_batch} does not divide by world size {world_size} x grad_accum "
            f"{accum}; choose a multiple of {world_size * accum} (e.g. optim.batch_size="
            f"{max(1, round(global_batch / (world_size * accum))) * world_size * accum})"
        )
    return config.optim.per_process_batch(world_size)


def check_data_root(config: RunConfig) -> Path | None:
    """Training needs prepared data (except the synthetic loader); say how to get it."""
    if config.data.loader == "synthetic":
        return None
    if not config.data.root:
        raise ConfigError(
            "data.root is empty: point it at a directory written by `dtrain prepare` "
            "(e.g. data.root=/data/imagenet-prepared) or use data.loader=synthetic"
        )
    root = Path(config.data.root)
    if not (root / "manifest.parquet").is_file():
        raise ConfigError(
            f"data.root={root} holds no prepared dataset (no manifest.parquet); "
            f"run `dtrain prepare ... --out {root}` first"
        )
    return root
