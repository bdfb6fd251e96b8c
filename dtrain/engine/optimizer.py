"""SGD with the papers' settings: momentum 0.9, weight decay 1e-4 (optionally none on BN and biases).

The lr given to the optimiser here is only its initial value: the loop sets every group's lr
from the LR schedule before each step (see lr_schedule.py).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim import SGD, Optimizer

from dtrain.config import OptimConfig
from dtrain.engine.lr_schedule import scaled_lr
from dtrain.errors import ConfigError


def param_groups(model: nn.Module, weight_decay: float, no_decay_bn_bias: bool) -> list[dict[str, Any]]:
    """One group with decay; with no_decay_bn_bias, BN weights/biases and all biases go in a second
    group without it (they are the 1-dimensional parameters of a ResNet)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_bn_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _sgd(groups: list[dict[str, Any]], optim: OptimConfig) -> Optimizer:
    return SGD(groups, lr=scaled_lr(optim), momentum=optim.momentum, nesterov=optim.nesterov,
               weight_decay=optim.weight_decay)


# optim.name -> the optimiser over the parameter groups (the papers use SGD only).
OPTIMIZERS = {"sgd": _sgd}


def build_optimizer(model: nn.Module, optim: OptimConfig) -> Optimizer:
    factory = OPTIMIZERS.get(optim.name)
    if factory is None:
        raise ConfigError(f"optim.name={optim.name!r} is not one of {', '.join(OPTIMIZERS)}")
    return factory(param_groups(model, optim.weight_decay, optim.no_decay_bn_bias), optim)


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
