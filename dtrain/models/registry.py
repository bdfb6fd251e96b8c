"""The model registry: names -> builders with preset options, and what each name is (ModelInfo).

`imagenet.py` and `cifar.py` register their nets when `dtrain.models` is imported.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dtrain.models.blocks import UnitOptions
from dtrain.models.lookup import lookup, suggestion


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # "imagenet" | "cifar"
    depth: int  # weighted layers, as in the name; 0 for the generic builders (depth is an option)
    native_input: int  # 224 | 32: the papers' training crop
    paper: str  # "R1" | "R2"
    default_num_classes: int


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    builder: Callable[..., nn.Module]
    preset: Mapping[str, Any] = field(default_factory=dict)  # options the name fixes or defaults
    listed: bool = True  # generic builders ("cifar_resnet") are buildable but not listed


_REGISTRY: dict[str, _Entry] = {}
_BUILDER_OWN_ARGUMENTS = {"num_classes", "options"}
_FAMILY_ORDER = ("imagenet", "cifar")


def register(info: ModelInfo, builder: Callable[..., nn.Module], listed: bool = True, **preset: Any) -> None:
    """Add a name. `preset` holds builder arguments the name fixes (depth, bottleneck) and unit
    options it defaults (unit="full_preact", shortcut="none", ...), which `build` may override."""
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is registered twice")
    _REGISTRY[info.name] = _Entry(info, builder, dict(preset), listed)


def names() -> list[str]:
    """Every network of both papers, ImageNet first, in order of depth within each family.

    The generic builders `cifar_resnet(depth=..., bottleneck=...)` and `imagenet_resnet(depth=...)`
    are buildable by name but not listed (they have no fixed depth)."""
    listed = [entry.info for entry in _REGISTRY.values() if entry.listed]
    # A stable sort: registration order (by depth) within each family, whatever the import order.
    return [model.name for model in sorted(listed, key=lambda model: _FAMILY_ORDER.index(model.family))]


def info(name: str) -> ModelInfo:
    return lookup(_REGISTRY, name, "model").info


def build(name: str, num_classes: int | None = None, **options: Any) -> nn.Module:
    """Build a registered net with fresh He-initialised weights; logits [B, num_classes].

    options: the fields of UnitOptions (unit, shortcut, shortcut_mode, stride_in_1x1,
    scale_residual, scale_shortcut, gate_bias, shortcut_dropout), zero_init_residual, and for the
    generic builders depth (and bottleneck for CIFAR). Bad names raise with the closest valid ones.
    """
    entry = lookup(_REGISTRY, name, "model")
    unit_fields = UnitOptions.field_names()
    builder_arguments = [a for a in inspect.signature(entry.builder).parameters if a not in _BUILDER_OWN_ARGUMENTS]
    for key in options:
        if key in unit_fields:
            continue
        if key in entry.preset:
            raise TypeError(
                f"option {key!r} is fixed by the model name {name!r}; "
                f"build a generic 'cifar_resnet' or 'imagenet_resnet' with {key}=... instead"
            )
        if key not in builder_arguments:
            valid = sorted(set(unit_fields) | set(builder_arguments) - set(entry.preset))
            raise TypeError(f"unknown option {key!r} for model {name!r}.{suggestion(key, valid)}")
    merged = {**entry.preset, **options}
    unit_options = UnitOptions(**{key: merged.pop(key) for key in list(merged) if key in unit_fields})
    classes = entry.info.default_num_classes if num_classes is None else num_classes
    return entry.builder(num_classes=classes, options=unit_options, **merged)


@dataclass(frozen=True)
class OptionSpec:
    """What the options of a registered name may hold: what a config checker needs without building."""

    preset: Mapping[str, Any]  # options the name fixes (builder arguments) or defaults (unit options)
    unit_fields: tuple[str, ...]
    builder_arguments: tuple[str, ...]


def option_spec(name: str) -> OptionSpec | None:
    """The OptionSpec of `name`, or None when no net is registered under it."""
    entry = _REGISTRY.get(name)
    if entry is None:
        return None
    arguments = tuple(a for a in inspect.signature(entry.builder).parameters if a not in _BUILDER_OWN_ARGUMENTS)
    return OptionSpec(entry.preset, tuple(UnitOptions.field_names()), arguments)


def check_options(name: str, num_classes: int, options: Mapping[str, Any]) -> None:
    """Raise what `build` would for these option values, allocating no weights: unit options are
    checked by UnitOptions; builder arguments (depth, bottleneck), which only the builder knows how
    to check, by building on the meta device."""
    entry = lookup(_REGISTRY, name, "model")
    unit_fields = UnitOptions.field_names()
    merged = {**entry.preset, **options}
    UnitOptions(**{key: value for key, value in merged.items() if key in unit_fields})
    if any(key not in unit_fields for key in options):
        with torch.device("meta"):
            build(name, num_classes=num_classes, **options)
