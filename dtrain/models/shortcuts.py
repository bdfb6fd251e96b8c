"""Shortcut paths h(x) of a residual unit and the ways a unit merges them with its branch F(x).

Two registries, both keyed by the names a user passes to `models.build`:

- SHORTCUT_OPTIONS: what h is where a unit changes dimensions (R1 §3.3 options A, B, C) or
  "none" for the plain nets of R1 (no shortcut at all).
- SHORTCUT_MODES: how h and F are combined (R2 Table 1): identity addition (the original),
  constant scaling, exclusive gating, shortcut-only gating, 1x1-conv shortcut, dropout shortcut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ZeroPadShortcut(nn.Module):
    """Option A (R1 §3.3): identity, subsampled by the stride, extra channels filled with zeros.

    Parameter-free, so a net with option A has exactly the parameters of its plain twin.
    Slicing with step `stride` yields ceil(H/stride) rows, the same size as the strided convs.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"zero-padding shortcut cannot shrink {in_channels} to {out_channels} channels")
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}"


def projection(in_channels: int, out_channels: int, stride: int, with_bn: bool) -> nn.Sequential:
    """1x1 conv projection W_s (R1 Eqn. 2); `Sequential` keeps torchvision's downsample.0/1 keys."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)]
    if with_bn:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


def is_projection(shortcut: nn.Module | None) -> bool:
    """True for shortcuts with weights; those read the pre-activated input in pre-activation units."""
    return shortcut is not None and any(True for _ in shortcut.parameters())


# A shortcut option builds h for one unit: (in_channels, out_channels, stride, projection_has_bn)
# -> module, or None for "no shortcut at all" (plain nets). nn.Identity carries no state, so the
# state_dict of an identity unit has no shortcut keys, as in torchvision.
ShortcutFactory = Callable[[int, int, int, bool], "nn.Module | None"]


def _option_a(cin: int, cout: int, stride: int, with_bn: bool) -> nn.Module:
    if cin == cout and stride == 1:
        return nn.Identity()
    return ZeroPadShortcut(cin, cout, stride)


def _option_b(cin: int, cout: int, stride: int, with_bn: bool) -> nn.Module:
    if cin == cout and stride == 1:
        return nn.Identity()
    return projection(cin, cout, stride, with_bn)


def _option_c(cin: int, cout: int, stride: int, with_bn: bool) -> nn.Module:
    return projection(cin, cout, stride, with_bn)


def _no_shortcut(cin: int, cout: int, stride: int, with_bn: bool) -> None:
    return None


SHORTCUT_OPTIONS: dict[str, ShortcutFactory] = {
    "A": _option_a,  # zero-padding where dimensions grow, identity elsewhere (R1 CIFAR nets)
    "B": _option_b,  # projection where dimensions grow, identity elsewhere (R1 ImageNet nets)
    "C": _option_c,  # projection on every shortcut
    "none": _no_shortcut,  # plain net
}


# ---- merging F(x) and h(x): R2 Table 1 -------------------------------------------------------


class AddMerge(nn.Module):
    """The original unit: y = F(x) + h(x)."""

    def forward(self, residual: torch.Tensor, shortcut: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return residual + shortcut


class ConstantScalingMerge(nn.Module):
    """y = scale_residual * F(x) + scale_shortcut * h(x) (R2 Fig. 2b; 0.5/0.5 is 'frozen gating')."""

    def __init__(self, scale_residual: float, scale_shortcut: float) -> None:
        super().__init__()
        self.scale_residual = scale_residual
        self.scale_shortcut = scale_shortcut

    def forward(self, residual: torch.Tensor, shortcut: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.scale_residual * residual + self.scale_shortcut * shortcut

    def extra_repr(self) -> str:
        return f"scale_residual={self.scale_residual}, scale_shortcut={self.scale_shortcut}"


class GatingMerge(nn.Module):
    """g(x) = sigmoid(1x1 conv(x) + b_g); shortcut scaled by 1 - g, F by g (exclusive) or 1 (shortcut-only).

    R2 Fig. 2c/2d. The gate bias b_g starts at `gate_bias`; a very negative b_g opens the shortcut
    (1 - g ~ 1) at initialisation, which is what made these nets train in R2.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, gate_bias: float, exclusive: bool) -> None:
        super().__init__()
        self.gate = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=True)
        assert self.gate.bias is not None  # bias=True
        nn.init.constant_(self.gate.bias, gate_bias)
        self.exclusive = exclusive

    def forward(self, residual: torch.Tensor, shortcut: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(x))
        scaled_residual = g * residual if self.exclusive else residual
        return scaled_residual + (1.0 - g) * shortcut

    def extra_repr(self) -> str:
        return f"exclusive={self.exclusive}"


class DropoutShortcutMerge(nn.Module):
    """y = F(x) + m * h(x), m ~ Bernoulli(1 - p) per element (R2 Fig. 2f).

    R2 (sec. 3.1): dropout on the shortcut "statistically imposes a scale of lambda with an
    expectation of 0.5 on the shortcut", like constant scaling by 0.5. `nn.Dropout` rescales the
    kept values by 1 / (1 - p), which keeps the shortcut's expected scale at 1 and so is not the
    ablation R2 ran; here kept values are not rescaled, and at test time h(x) is multiplied by its
    expectation 1 - p (the original dropout's test rule)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, residual: torch.Tensor, shortcut: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        keep = 1.0 - self.p
        if not self.training:
            return residual + keep * shortcut
        mask = torch.empty_like(shortcut).bernoulli_(keep)
        return residual + mask * shortcut

    def extra_repr(self) -> str:
        return f"p={self.p}, expected shortcut scale={1.0 - self.p}"


@dataclass(frozen=True)
class MergeContext:
    """What a merge factory may use: the unit's geometry and the user's ablation options."""

    in_channels: int
    out_channels: int
    stride: int
    scale_residual: float | None = None
    scale_shortcut: float | None = None
    gate_bias: float | None = None
    shortcut_dropout: float | None = None


@dataclass(frozen=True)
class ShortcutMode:
    """One row of R2 Table 1: how a unit merges, which options it takes, which shortcut it forces."""

    name: str
    make_merge: Callable[[MergeContext], nn.Module]
    options: tuple[str, ...] = ()  # the MergeContext option fields this mode reads
    forced_shortcut: str | None = None  # e.g. the 1x1-conv shortcut is option C on every unit


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


SHORTCUT_MODES: dict[str, ShortcutMode] = {
    mode.name: mode
    for mode in (
        ShortcutMode("identity", lambda c: AddMerge()),
        # Defaults 0.5/0.5: the variant of Table 1 that converges (12.35%); scale_residual=1 is the other.
        ShortcutMode(
            "constant_scaling",
            lambda c: ConstantScalingMerge(_pick(c.scale_residual, 0.5), _pick(c.scale_shortcut, 0.5)),
            options=("scale_residual", "scale_shortcut"),
        ),
        # Default b_g = -6: the best gating rows of Table 1 (8.70% exclusive, 6.91% shortcut-only).
        ShortcutMode(
            "exclusive_gating",
            lambda c: GatingMerge(c.in_channels, c.out_channels, c.stride, _pick(c.gate_bias, -6.0), exclusive=True),
            options=("gate_bias",),
        ),
        ShortcutMode(
            "shortcut_only_gating",
            lambda c: GatingMerge(c.in_channels, c.out_channels, c.stride, _pick(c.gate_bias, -6.0), exclusive=False),
            options=("gate_bias",),
        ),
        ShortcutMode("conv_shortcut", lambda c: AddMerge(), forced_shortcut="C"),
        ShortcutMode(
            "dropout_shortcut",
            lambda c: DropoutShortcutMerge(_pick(c.shortcut_dropout, 0.5)),
            options=("shortcut_dropout",),
        ),
    )
}

# The option fields of MergeContext a user may set; each mode accepts only its own.
MERGE_OPTION_NAMES: tuple[str, ...] = ("scale_residual", "scale_shortcut", "gate_bias", "shortcut_dropout")
