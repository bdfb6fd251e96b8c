"""The networks of both ResNet papers as plain nn.Modules, behind a small registry.

    from dtrain import models
    models.names()                                  # every net of R1 and R2
    net = models.build("resnet50", num_classes=1000, stride_in_1x1=False)
    models.info("resnet110")                        # ModelInfo(family="cifar", depth=110, ...)
    models.complexity(net, 224)                     # (parameters, multiply-adds)

This package imports nothing from the rest of dtrain (tests/unit/test_import_boundaries.py).
"""

from dtrain.models import cifar as _cifar  # noqa: F401  (registers the CIFAR nets)
from dtrain.models import imagenet as _imagenet  # noqa: F401  (registers the ImageNet nets)
from dtrain.models.blocks import BRANCH_KINDS, UNIT_ALIASES, UNIT_LAYOUTS, ResidualUnit, UnitOptions
from dtrain.models.cifar import cifar_resnet
from dtrain.models.complexity import complexity, multiply_adds, named_complexity, parameter_count
from dtrain.models.imagenet import imagenet_resnet
from dtrain.models.lookup import UnknownNameError
from dtrain.models.registry import ModelInfo, build, info, names
from dtrain.models.resnet import ResNet, ResNetSpec
from dtrain.models.shortcuts import SHORTCUT_MODES, SHORTCUT_OPTIONS

__all__ = [
    "BRANCH_KINDS",
    "SHORTCUT_MODES",
    "SHORTCUT_OPTIONS",
    "UNIT_ALIASES",
    "UNIT_LAYOUTS",
    "ModelInfo",
    "ResNet",
    "ResNetSpec",
    "ResidualUnit",
    "UnitOptions",
    "UnknownNameError",
    "build",
    "cifar_resnet",
    "complexity",
    "imagenet_resnet",
    "info",
    "multiply_adds",
    "named_complexity",
    "names",
    "parameter_count",
]
