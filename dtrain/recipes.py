"""Recipes on disk: where `dtrain train RECIPE` finds configs/RECIPE.yaml, and `extends:` merging.

The resolver (dtrain.resolve) applies overrides to the merged mapping and turns it into the typed
dataclasses of dtrain.config; this module only finds and reads the YAML files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from dtrain import yaml12
from dtrain.errors import ConfigError, did_you_mean
from dtrain.resources import resource_dir


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up: $DTRAIN_CONFIGS, ./configs, then dtrain's own (the repository's
    configs/, or the copy a wheel carries)."""
    dirs: list[Path] = []
    if os.environ.get("DTRAIN_CONFIGS"):
        dirs.extend(Path(p) for p in os.environ["DTRAIN_CONFIGS"].split(os.pathsep) if p)
    dirs.append(Path.cwd() / "configs")
    dirs.append(resource_dir("configs"))
    seen: set[Path] = set()
    unique: list[Path] = []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen and d.is_dir():
            seen.add(key)
            unique.append(d)
    return unique


def recipe_names() -> list[str]:
    names: set[str] = set()
    for d in recipe_dirs():
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_recipe(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if path.is_file():
            return path
        raise ConfigError(f"recipe file {path} does not exist")
    for d in recipe_dirs():
        candidate = d / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    # The closest names only: a list of all 40 hides the one that was meant.
    raise ConfigError(
        f"unknown recipe {name_or_path!r}{did_you_mean(name_or_path, recipe_names(), n=3, fallback='')}; "
        "`dtrain recipes` lists them"
    )


def load_recipe_yaml(path: Path) -> dict[str, Any]:
    """The recipe's mapping, with the files it `extends:` merged underneath it."""
    merged: dict[str, Any] = {}
    for _, layer in recipe_layers(path):
        merged = _deep_merge(merged, layer)
    return merged


def recipe_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """(file, its own mapping) for the recipe and every file it `extends:`, the deepest base first,
    so that an error can name the file that holds the bad key."""
    if path.resolve() in seen:
        raise ConfigError(f"recipe {path} extends itself in a loop")
    try:
        data = yaml12.load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must hold a mapping at its top level")
    parent = data.pop("extends", None)
    if parent is None:
        return [(path, data)]
    return [*recipe_layers(_parent_path(path, str(parent)), seen + (path.resolve(),)), (path, data)]


def _parent_path(path: Path, parent: str) -> Path:
    """`extends:` takes a path relative to the extending file (`_base/imagenet_r1.yaml`) or a
    recipe name (`digits_resnet20`), as `dtrain train` does."""
    relative = (path.parent / parent).resolve()
    if relative.is_file():
        return relative
    if Path(parent).suffix in (".yaml", ".yml") or "/" in parent:
        raise ConfigError(f"recipe {path} extends {parent}, which does not exist")
    try:
        return find_recipe(parent).resolve()
    except ConfigError as exc:
        raise ConfigError(f"recipe {path} extends {exc}") from None


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "options":
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
