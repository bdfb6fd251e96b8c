"""CIFAR ResNets: R1 §4.2 (6n+2, basic units, option A) and R2's bottleneck nets (9n+2)."""

from __future__ import annotations

from typing import Any

from dtrain.models.blocks import BRANCH_KINDS, UnitOptions
from dtrain.models.registry import ModelInfo, register
from dtrain.models.resnet import ResNet, ResNetSpec

CIFAR_WIDTHS = (16, 32, 64)  # on 32x32, 16x16, 8x8 maps; bottleneck outputs are 64, 128, 256


def units_per_stage(depth: int, bottleneck: bool, branch: str | None = None) -> int:
    """n of the 6n+2 (basic), 9n+2 (bottleneck) or 3n+2 (single-layer) rule, or a ValueError
    naming valid depths."""
    kind = branch or ("bottleneck" if bottleneck else "basic")
    layers_per_n = 3 * BRANCH_KINDS[kind].convs_per_unit
    n, remainder = divmod(depth - 2, layers_per_n)
    if remainder or n < 1:
        examples = ", ".join(str(layers_per_n * k + 2) for k in (1, 2, 3))
        raise ValueError(f"CIFAR {kind} ResNets have depth {layers_per_n}n+2 ({examples}, ...); got {depth}")
    return n


def cifar_resnet(
    depth: int,
    num_classes: int = 10,
    bottleneck: bool = False,
    options: UnitOptions | None = None,
    zero_init_residual: bool = False,
    branch: str | None = None,
) -> ResNet:
    """CIFAR ResNet of any valid depth. Shortcut option A for basic nets (R1: the same parameters
    as the plain net), B for bottleneck nets (their first unit grows 16 -> 64 channels).
    `branch` names the unit's convolutions (a key of BRANCH_KINDS; default basic/bottleneck)."""
    kind = branch or ("bottleneck" if bottleneck else "basic")
    n = units_per_stage(depth, bottleneck, branch)
    options = options or UnitOptions()
    spec = ResNetSpec("cifar", kind, (n, n, n), CIFAR_WIDTHS)
    default_shortcut = "B" if kind == "bottleneck" else "A"
    return ResNet(spec, num_classes, options, options.shortcut_option(default_shortcut), zero_init_residual)


def _register(name: str, depth: int, paper: str, **preset: Any) -> None:
    register(ModelInfo(name, "cifar", depth, 32, paper, 10), cifar_resnet, depth=depth, **preset)


for _depth in (20, 32, 44, 56, 110, 1202):  # R1 Table 6
    _register(f"resnet{_depth}", _depth, "R1", bottleneck=False)
    _register(f"plain{_depth}", _depth, "R1", bottleneck=False, shortcut="none")
_register("resnet110_preact", 110, "R2", bottleneck=False, unit="full_preact")
# R2 Table 3 "ResNet-110 (1layer skip)": 36 one-conv units per stage, original and pre-activation.
_register("resnet110_1layer", 110, "R2", bottleneck=False, branch="single")
_register("resnet110_1layer_preact", 110, "R2", bottleneck=False, branch="single", unit="full_preact")
for _depth in (164, 1001):  # R2 Table 3: original and pre-activation bottleneck nets
    _register(f"resnet{_depth}", _depth, "R2", bottleneck=True)
    _register(f"resnet{_depth}_preact", _depth, "R2", bottleneck=True, unit="full_preact")
register(ModelInfo("cifar_resnet", "cifar", 0, 32, "R1", 10), cifar_resnet, listed=False)
