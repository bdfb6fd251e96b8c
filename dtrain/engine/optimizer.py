"""The optimiser (optim.name): SGD (the papers: momentum 0.9, weight decay 1e-4), AdamW or LAMB,
over parameter groups with optionally no weight decay on some parameters (optim.no_decay:
normalisation layers and biases, normalisation layers, or FFCV's 'bn'-named ones); and gradient
clipping by global norm.

The lr given to the optimiser here is only its initial value: the loop sets every group's lr
from the LR schedule before each step (see lr_schedule.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import SGD, AdamW, Optimizer

from dtrain.config import OptimConfig
from dtrain.engine.lamb import Lamb
from dtrain.engine.lr_schedule import scaled_lr
from dtrain.errors import ConfigError

# The layers whose weight and bias torchvision's --norm-weight-decay applies to
# (torchvision.ops._utils.split_normalization_params).
NORM_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                                            nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float, no_decay: str) -> list[dict[str, Any]]:
    """One group with decay; with optim.no_decay other than none, the parameters it names go in a
    second group with weight_decay 0. Both groups keep the model's parameter order."""
    params = [p for p in model.parameters() if p.requires_grad]
    if no_decay == "none":
        return [{"params": params, "weight_decay": weight_decay}]
    if no_decay not in NO_DECAY:
        raise ConfigError(f"optim.no_decay={no_decay!r} is not one of {', '.join(NO_DECAY)}")
    exempt = {id(p) for p in NO_DECAY[no_decay](model)}
    return [{"params": [p for p in params if id(p) not in exempt], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) in exempt], "weight_decay": 0.0}]


def norm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of normalisation layers (torchvision.ops._utils.split_normalization_params)."""
    return [param for module in model.modules() if isinstance(module, NORM_LAYERS)
            for param in module.parameters(recurse=False)]


def norm_and_bias_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of normalisation layers and the biases of all other layers (for a ResNet,
    timm's param_groups_weight_decay: every 1-d parameter)."""
    found = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, NORM_LAYERS) or name == "bias":
                found.append(param)
    return found


def bn_named_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters whose name contains 'bn', as ffcv-imagenet's train_imagenet.py picks them:
    in torchvision's ResNet layout (dtrain's) bn1..bn3, not the downsample BN (downsample.1) or fc.bias."""
    return [param for name, param in model.named_parameters() if "bn" in name]


# optim.no_decay -> the parameters that get weight decay 0 (none: every parameter decays).
NO_DECAY: dict[str, Callable[[nn.Module], list[nn.Parameter]]] = {
    "none": lambda model: [],
    "norm_and_bias": norm_and_bias_parameters,
    "norm": norm_parameters,
    "bn_named": bn_named_parameters,
}


def _sgd(groups: list[dict[str, Any]], optim: OptimConfig) -> Optimizer:
    return SGD(groups, lr=scaled_lr(optim), momentum=optim.momentum, nesterov=optim.nesterov,
               weight_decay=optim.weight_decay)


def _adamw(groups: list[dict[str, Any]], optim: OptimConfig) -> Optimizer:
    beta1, beta2 = optim.betas
    return AdamW(groups, lr=scaled_lr(optim), betas=(beta1, beta2), eps=optim.eps or 1e-8,
                 weight_decay=optim.weight_decay)


def _lamb(groups: list[dict[str, Any]], optim: OptimConfig) -> Optimizer:
    beta1, beta2 = optim.betas
    return Lamb(groups, lr=scaled_lr(optim), betas=(beta1, beta2), eps=optim.eps or 1e-6,
                weight_decay=optim.weight_decay)


# optim.name -> the optimiser over the parameter groups (the papers use SGD only).
OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], OptimConfig], Optimizer]] = {
    "sgd": _sgd,
    "adamw": _adamw,
    "lamb": _lamb,
}


def build_optimizer(model: nn.Module, optim: OptimConfig) -> Optimizer:
    factory = OPTIMIZERS.get(optim.name)
    if factory is None:
        raise ConfigError(f"optim.name={optim.name!r} is not one of {', '.join(OPTIMIZERS)}")
    return factory(param_groups(model, optim.weight_decay, optim.no_decay), optim)


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_gradients(optimizer: Optimizer, max_norm: float) -> None:
    """Scale the gradients of all the optimiser's parameters so that their global L2 norm is at
    most max_norm (torch.nn.utils.clip_grad_norm_); 0 leaves them as they are. The gradients must
    be the true ones: fp16 loss scaling unscales them first (DDPEngine.step)."""
    if max_norm > 0:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm)
