"""Residual units: one module class driven by two small registries.

- BRANCH_KINDS: the convolutions of F (basic: two 3x3; bottleneck: 1x1-3x3-1x1, x4 expansion).
- UNIT_LAYOUTS: where BN and ReLU sit around those convolutions (R2 Fig. 4 a-e).

A unit is planned as a list of named steps ("conv1", "bn1", "relu", ...) and run in that order.
The names follow torchvision (conv1, bn1, conv2, bn2, conv3, bn3, downsample.0/1), so the
post-activation ImageNet nets load torchvision state_dicts; in pre-activation units bn_i is
the BN in front of conv_i.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from dtrain.models.blur_pool import BlurPool
from dtrain.models.lookup import lookup
from dtrain.models.shortcuts import (
    MERGE_OPTION_NAMES,
    SHORTCUT_MODES,
    SHORTCUT_OPTIONS,
    MergeContext,
    ShortcutMode,
    is_projection,
)
from dtrain.models.stochastic_depth import STOCHASTIC_DEPTH_MODES, stochastic_depth

# (in_channels, out_channels, kernel, stride) of one convolution of F.
ConvShape = tuple[int, int, int, int]


@dataclass(frozen=True)
class BranchKind:
    name: str
    expansion: int  # out_channels = expansion * width
    convs_per_unit: int
    conv_shapes: Callable[[int, int, int, bool], list[ConvShape]]  # (in, width, stride, stride_in_1x1)


def _basic_shapes(in_channels: int, width: int, stride: int, stride_in_1x1: bool) -> list[ConvShape]:
    return [(in_channels, width, 3, stride), (width, width, 3, 1)]


def _bottleneck_shapes(in_channels: int, width: int, stride: int, stride_in_1x1: bool) -> list[ConvShape]:
    # R1 puts the stride-2 on the first 1x1; "v1.5" (torchvision, fb.resnet.torch) on the 3x3.
    stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
    return [(in_channels, width, 1, stride_1x1), (width, width, 3, stride_3x3), (width, 4 * width, 1, 1)]


def _single_shapes(in_channels: int, width: int, stride: int, stride_in_1x1: bool) -> list[ConvShape]:
    # R2 Table 3 "ResNet-110 (1layer skip)": every shortcut skips one 3x3 layer.
    return [(in_channels, width, 3, stride)]


BRANCH_KINDS: dict[str, BranchKind] = {
    "basic": BranchKind("basic", expansion=1, convs_per_unit=2, conv_shapes=_basic_shapes),
    "single": BranchKind("single", expansion=1, convs_per_unit=1, conv_shapes=_single_shapes),
    "bottleneck": BranchKind("bottleneck", expansion=4, convs_per_unit=3, conv_shapes=_bottleneck_shapes),
}


@dataclass(frozen=True)
class UnitLayout:
    """Order of ops around each conv of F ("conv" marks the conv), and after the addition."""

    name: str
    figure: str
    conv_pattern: tuple[str, ...]  # every conv but the last
    last_conv_pattern: tuple[str, ...]
    after_add: tuple[str, ...]
    projection_bn: bool  # does a projection shortcut end in BN (as F does) or in its conv?

    @property
    def preactivation(self) -> tuple[str, ...]:
        """Ops in front of the first conv. Projection shortcuts read their output; the stem already
        applies them for the first unit; the net applies them once more after the last unit (R2 App.)."""
        return self.conv_pattern[: self.conv_pattern.index("conv")]


UNIT_LAYOUTS: dict[str, UnitLayout] = {
    layout.name: layout
    for layout in (
        UnitLayout("original", "R2 Fig. 4a", ("conv", "bn", "relu"), ("conv", "bn"), ("relu",), True),
        UnitLayout("bn_after_add", "R2 Fig. 4b", ("conv", "bn", "relu"), ("conv",), ("bn", "relu"), True),
        UnitLayout("relu_before_add", "R2 Fig. 4c", ("conv", "bn", "relu"), ("conv", "bn", "relu"), (), True),
        UnitLayout("relu_preact", "R2 Fig. 4d", ("relu", "conv", "bn"), ("relu", "conv", "bn"), (), True),
        # Projection = conv only, as in the authors' pre-activation code: its input is already BN-ReLU'd.
        UnitLayout("full_preact", "R2 Fig. 4e", ("bn", "relu", "conv"), ("bn", "relu", "conv"), (), False),
    )
}
# The panel letters of R2 Fig. 4 work as names too.
UNIT_ALIASES = {"a": "original", "b": "bn_after_add", "c": "relu_before_add", "d": "relu_preact", "e": "full_preact"}


@dataclass(frozen=True)
class UnitOptions:
    """How every unit of a net is built; the keyword options of `models.build` that shape units."""

    unit: str = "original"  # a key of UNIT_LAYOUTS or a letter a-e (R2 Table 2)
    shortcut: str | None = None  # "A" | "B" | "C" | "none" (plain); None: the family's default
    shortcut_mode: str = "identity"  # a key of SHORTCUT_MODES (R2 Table 1)
    stride_in_1x1: bool = True  # bottleneck stride on the first 1x1 (R1) or on the 3x3 (v1.5)
    scale_residual: float | None = None
    scale_shortcut: float | None = None
    gate_bias: float | None = None
    shortcut_dropout: float | None = None
    # Beyond the papers (the recipes of timm and FFCV): see stochastic_depth.py and blur_pool.py.
    stochastic_depth: float = 0.0  # drop rate of the last unit's F; linear in depth from 0 (Huang et al. 2016)
    stochastic_depth_mode: str = "row"  # "row": per sample (timm, torchvision); "batch": the whole batch
    blurpool: bool = False  # a 3x3 binomial blur before each stride-2 conv of the units (Zhang 2019)

    def __post_init__(self) -> None:
        lookup(UNIT_LAYOUTS, UNIT_ALIASES.get(self.unit, self.unit), "unit")
        mode = lookup(SHORTCUT_MODES, self.shortcut_mode, "shortcut_mode")
        if self.shortcut is not None:
            lookup(SHORTCUT_OPTIONS, self.shortcut, "shortcut option")
        for name in MERGE_OPTION_NAMES:
            if getattr(self, name) is not None and name not in mode.options:
                users = [m.name for m in SHORTCUT_MODES.values() if name in m.options]
                raise ValueError(f"option {name} needs shortcut_mode {' or '.join(users)}, not {self.shortcut_mode!r}")
        if self.shortcut == "none" and self.shortcut_mode != "identity":
            raise ValueError(f"shortcut_mode {self.shortcut_mode!r} needs a shortcut; this is a plain net")
        if self.shortcut_dropout is not None and not 0.0 <= self.shortcut_dropout < 1.0:
            raise ValueError(f"shortcut_dropout must be in [0, 1), got {self.shortcut_dropout}")
        if not 0.0 <= self.stochastic_depth < 1.0:
            raise ValueError(f"stochastic_depth must be in [0, 1), got {self.stochastic_depth}")
        if self.stochastic_depth and self.shortcut == "none":
            raise ValueError("stochastic_depth drops residual branches; a plain net (shortcut none) has none")
        lookup(dict.fromkeys(STOCHASTIC_DEPTH_MODES), self.stochastic_depth_mode, "stochastic_depth_mode")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @property
    def layout(self) -> UnitLayout:
        return UNIT_LAYOUTS[UNIT_ALIASES.get(self.unit, self.unit)]

    @property
    def mode(self) -> ShortcutMode:
        return SHORTCUT_MODES[self.shortcut_mode]

    def shortcut_option(self, family_default: str) -> str:
        """The shortcut option in force: the mode's (1x1-conv shortcut = C), the user's, the family's."""
        return self.mode.forced_shortcut or self.shortcut or family_default

    def merge_context(self, in_channels: int, out_channels: int, stride: int) -> MergeContext:
        chosen = {name: getattr(self, name) for name in MERGE_OPTION_NAMES}
        return MergeContext(in_channels, out_channels, stride, **chosen)


def _plan_branch(shapes: list[ConvShape], layout: UnitLayout,
                 blurpool: bool = False) -> list[tuple[str, nn.Module | None]]:
    """Named steps of F in order; relu steps carry no module (functional, no state). With
    `blurpool`, a stride-2 conv_i gets a blur_i step right in front of it."""
    steps: list[tuple[str, nn.Module | None]] = []
    channels = shapes[0][0]
    conv_count = bn_count = 0
    for index, (cin, cout, kernel, stride) in enumerate(shapes):
        pattern = layout.last_conv_pattern if index == len(shapes) - 1 else layout.conv_pattern
        for op in pattern:
            if op == "conv":
                conv_count += 1
                if blurpool and stride > 1:
                    steps.append((f"blur{conv_count}", BlurPool(cin)))
                conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
                steps.append((f"conv{conv_count}", conv))
                channels = cout
            elif op == "bn":
                bn_count += 1
                steps.append((f"bn{bn_count}", nn.BatchNorm2d(channels)))
            else:
                steps.append(("relu", None))
    return steps


class ResidualUnit(nn.Module):
    """y = merge(F(x), h(x)), with BN/ReLU placed by the layout and h chosen by the shortcut option.

    `skip_preactivation` drops the leading BN/ReLU of F for the first unit of a net, whose input
    the stem has already activated (R2 Appendix: "the first activation after conv1, before the split").
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        kind: BranchKind,
        options: UnitOptions,
        shortcut_option: str,
        skip_preactivation: bool = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        layout = options.layout
        shapes = kind.conv_shapes(in_channels, width, stride, options.stride_in_1x1)
        self.out_channels = shapes[-1][1]
        steps = _plan_branch(shapes, layout, options.blurpool)
        preactivation_count = len(layout.preactivation)
        if skip_preactivation:
            steps = steps[preactivation_count:]
            preactivation_count = 0
        for name, module in steps:
            if module is not None:
                self.add_module(name, module)
        names = [name for name, _ in steps]
        self.preactivation_steps = tuple(names[:preactivation_count])
        self.branch_steps = tuple(names[preactivation_count:])

        # `downsample` is torchvision's name for the shortcut module, kept for its state_dict keys.
        make_shortcut = SHORTCUT_OPTIONS[shortcut_option]
        self.downsample = make_shortcut(in_channels, self.out_channels, stride, layout.projection_bn)
        self.shortcut_reads_preactivation = is_projection(self.downsample)
        # BlurPool in front of a strided projection too, as FFCV's blurs every stride-2 conv.
        self.shortcut_blur = BlurPool(in_channels) if options.blurpool and stride > 1 and \
            self.shortcut_reads_preactivation else None
        # Stochastic depth: this unit's drop rate of F (the net sets it by the linear rule).
        self.drop_rate, self.drop_mode = drop_rate, options.stochastic_depth_mode
        self.merge: nn.Module | None = None  # a merge exists exactly when a shortcut does
        if self.downsample is not None:
            self.merge = options.mode.make_merge(options.merge_context(in_channels, self.out_channels, stride))

        self.after_add_steps: tuple[str, ...] = ()
        for op in layout.after_add:
            if op == "bn":
                self.bn_after_add = nn.BatchNorm2d(self.out_channels)
            self.after_add_steps += ("bn_after_add" if op == "bn" else op,)

    def _run(self, steps: tuple[str, ...], x: torch.Tensor) -> torch.Tensor:
        for name in steps:
            x = F.relu(x) if name == "relu" else getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self._run(self.preactivation_steps, x)
        out = self._run(self.branch_steps, activated)
        if self.downsample is not None and self.merge is not None:
            out = stochastic_depth(out, self.drop_rate, self.drop_mode, self.training)
            source = activated if self.shortcut_reads_preactivation else x
            shortcut_input = source if self.shortcut_blur is None else self.shortcut_blur(source)
            out = self.merge(out, self.downsample(shortcut_input), source)
        return self._run(self.after_add_steps, out)

    def extra_repr(self) -> str:
        preactivation = " ".join(self.preactivation_steps)
        shortcut = "no shortcut" if self.downsample is None else "merge with shortcut"
        after_add = " ".join(self.after_add_steps) or "-"
        dropped = f"; stochastic depth {self.drop_rate:.4g} ({self.drop_mode})" if self.drop_rate else ""
        return f"steps: [{preactivation}] {' '.join(self.branch_steps)}; {shortcut}; after add: {after_add}{dropped}"

    def last_branch_bn(self) -> nn.BatchNorm2d | None:
        """The last BN inside F: zeroing its gamma makes F(x) = 0 at init (zero_init_residual)."""
        bn_names = [name for name in self.branch_steps if name.startswith("bn")]
        return getattr(self, bn_names[-1]) if bn_names else None
