"""ImageNet ResNets (R1 Table 1; ResNet-200 and the pre-activation nets of R2), input 224x224."""

from __future__ import annotations

from typing import Any

from dtrain.models.blocks import UnitOptions
from dtrain.models.registry import ModelInfo, register
from dtrain.models.resnet import ResNet, ResNetSpec

# depth -> (unit kind, units per stage); R1 Table 1 and R2 §4 (ResNet-200).
IMAGENET_STAGES: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)


def imagenet_resnet(
    depth: int,
    num_classes: int = 1000,
    options: UnitOptions | None = None,
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-`depth` for ImageNet; option B shortcuts unless `options.shortcut` says otherwise."""
    if depth not in IMAGENET_STAGES:
        raise ValueError(f"ImageNet ResNets have depth {', '.join(map(str, IMAGENET_STAGES))}; got {depth}")
    options = options or UnitOptions()
    kind, stages = IMAGENET_STAGES[depth]
    spec = ResNetSpec("imagenet", kind, stages, IMAGENET_WIDTHS)
    return ResNet(spec, num_classes, options, options.shortcut_option("B"), zero_init_residual)


def _register(name: str, depth: int, paper: str, **preset: Any) -> None:
    register(ModelInfo(name, "imagenet", depth, 224, paper, 1000), imagenet_resnet, depth=depth, **preset)


for _depth in (18, 34, 50, 101, 152):
    _register(f"resnet{_depth}", _depth, "R1")
_register("resnet200", 200, "R2")  # R2 Table 5's original (post-activation) ResNet-200
for _depth in (18, 34, 50):
    _register(f"plain{_depth}", _depth, "R1", shortcut="none")
for _depth in (50, 101, 152):  # stride on the 3x3 conv: torchvision's and most frameworks' nets
    _register(f"resnet{_depth}_v1_5", _depth, "R1", stride_in_1x1=False)
for _depth in (18, 34, 50, 101, 152, 200):
    _register(f"resnet{_depth}_preact", _depth, "R2", unit="full_preact")
register(ModelInfo("imagenet_resnet", "imagenet", 0, 224, "R1", 1000), imagenet_resnet, listed=False)
