"""Parameters and multiply-adds, counted from the real module graph.

Multiply-adds are those of every Conv2d and Linear that a forward pass of one image runs
(forward hooks read the actual output shapes), the convention of R1's FLOP counts; BlurPool's
fixed depthwise 3x3 filter counts as the convolution it is (9 per output value). BN, ReLU,
additions and pooling are not counted, as in the papers. One image on the CPU costs under a
second even for ResNet-1202 or ResNet-200; with torch 2.13 on CPU the meta device is slower
(its ops and inits go through Python decompositions), so `named_complexity` uses the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import nn

from dtrain.models.blur_pool import BlurPool
from dtrain.models.registry import build, info


def _size(input_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(input_size, int):
        return input_size, input_size
    height, width = input_size
    return int(height), int(width)


def _conv_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    kernel_h, kernel_w = module.kernel_size
    per_output = (module.in_channels // module.groups) * kernel_h * kernel_w
    return output.numel() * per_output


def _linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    return output.numel() * module.in_features


def _blur_macs(module: BlurPool, output: torch.Tensor) -> int:
    return output.numel() * 9  # a depthwise 3x3 convolution (stride 1: output size = input size)


# module type -> multiply-adds of one call from the module and its output
_COUNTERS: dict[type[nn.Module], Callable[[Any, torch.Tensor], int]] = {
    nn.Conv2d: _conv_macs, nn.Linear: _linear_macs, BlurPool: _blur_macs}


def multiply_adds(model: nn.Module, input_size: int | tuple[int, int], in_channels: int = 3) -> int:
    """Multiply-adds of one forward pass of a single image of `input_size` (int or (H, W)).

    Runs in eval mode under no_grad (BN statistics stay untouched) on the model's device (a model
    built under `torch.device("meta")` works too).
    """
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += _COUNTERS[type(module)](module, output)

    handles = [m.register_forward_hook(count) for m in model.modules() if type(m) in _COUNTERS]
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *_size(input_size), device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def parameter_count(model: nn.Module) -> int:
    """Learnable parameters (BN running statistics are buffers and do not count)."""
    return sum(p.numel() for p in model.parameters())


def complexity(model: nn.Module, input_size: int | tuple[int, int]) -> tuple[int, int]:
    """(parameters, multiply-adds at `input_size`) of a built model."""
    return parameter_count(model), multiply_adds(model, input_size)


@cache
def named_complexity(name: str, input_size: int | None = None) -> tuple[int, int]:
    """(parameters, multiply-adds) of a registered net at its native input (or `input_size`),
    built on the CPU; cached per process, since the numbers never change."""
    model = build(name)
    return complexity(model, input_size or info(name).native_input)
