"""The network around the units: stem, stages of residual units, optional final activation, head.

One class serves both papers' ImageNet and CIFAR nets; a `ResNetSpec` says which stem and how
many units of which width per stage. Attribute names follow torchvision (conv1, bn1, layer1..,
fc) so post-activation ImageNet nets share its state_dict keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dtrain.models.blocks import BRANCH_KINDS, ResidualUnit, UnitOptions
from dtrain.models.lookup import lookup
from dtrain.models.stochastic_depth import linear_drop_rates


@dataclass(frozen=True)
class Stem:
    width: int
    kernel: int
    stride: int
    max_pool: bool


STEMS: dict[str, Stem] = {
    "imagenet": Stem(width=64, kernel=7, stride=2, max_pool=True),  # R1 Table 1 conv1 + pool
    "cifar": Stem(width=16, kernel=3, stride=1, max_pool=False),  # R1 §4.2
}


@dataclass(frozen=True)
class ResNetSpec:
    stem: str  # key of STEMS
    kind: str  # key of BRANCH_KINDS
    stage_depths: tuple[int, ...]  # units per stage
    stage_widths: tuple[int, ...]  # width of F's convs (bottleneck outputs are 4x)

    @property
    def weighted_layers(self) -> int:
        """The depth in the papers' names: convs on the main path plus the stem conv and the fc."""
        return BRANCH_KINDS[self.kind].convs_per_unit * sum(self.stage_depths) + 2


class GlobalAvgPool(nn.Module):
    """The mean over H and W, keeping N x C x 1 x 1 (what nn.AdaptiveAvgPool2d(1) returns).

    Written as a mean because adaptive_avg_pool2d's CUDA backward has no deterministic kernel:
    with train.deterministic=true (exact-resume checks) torch raises on the first backward
    (pytorch/pytorch#149130). A mean's backward is a broadcast, deterministic everywhere.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class ResNet(nn.Module):
    """Stem conv-BN-ReLU(-maxpool), stages (stride 2 in the first unit of every stage but the
    first), global average pool, fc. Pre-activation layouts add their activation after the last
    unit (R2 Appendix); `final_bn` is that BN for full pre-activation."""

    def __init__(
        self,
        spec: ResNetSpec,
        num_classes: int,
        options: UnitOptions,
        shortcut_option: str,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        stem = lookup(STEMS, spec.stem, "stem")
        kind = lookup(BRANCH_KINDS, spec.kind, "unit kind")
        self.conv1 = nn.Conv2d(3, stem.width, stem.kernel, stride=stem.stride, padding=stem.kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(stem.width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem.max_pool else nn.Identity()

        channels = stem.width
        self.stage_names: list[str] = []
        drop_rates = iter(linear_drop_rates(options.stochastic_depth, sum(spec.stage_depths)))
        for stage, (depth, width) in enumerate(zip(spec.stage_depths, spec.stage_widths, strict=True)):
            units = []
            for index in range(depth):
                first_unit_of_net = stage == 0 and index == 0
                stride = 2 if stage > 0 and index == 0 else 1
                unit = ResidualUnit(channels, width, stride, kind, options, shortcut_option,
                                    skip_preactivation=first_unit_of_net, drop_rate=next(drop_rates))
                units.append(unit)
                channels = unit.out_channels
            name = f"layer{stage + 1}"
            self.add_module(name, nn.Sequential(*units))
            self.stage_names.append(name)

        # The activation that a next unit would apply, applied once after the last one.
        self.final_steps = options.layout.preactivation
        if "bn" in self.final_steps:
            self.final_bn = nn.BatchNorm2d(channels)
        self.avgpool = GlobalAvgPool()
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        self._initialise(zero_init_residual)

    def _initialise(self, zero_init_residual: bool) -> None:
        # He et al. 2015 (R1 §3.4), as torchvision: fan_out normal convs, BN gamma 1 / beta 0.
        # The fc keeps nn.Linear's default init, as torchvision's ResNet does. Conv biases (only
        # the gates of R2's gating ablations) keep the gate bias set by their merge module.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:  # Goyal et al. 2017: every unit starts as (near) identity
            for module in self.modules():
                if isinstance(module, ResidualUnit) and (bn := module.last_branch_bn()) is not None:
                    nn.init.zeros_(bn.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before pooling (for analyses and fully-convolutional testing)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        for step in self.final_steps:
            x = self.final_bn(x) if step == "bn" else torch.relu(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.fc(torch.flatten(x, 1))
