"""Mixed precision, memory format and compilation: the CUDA speed options of train.*.

bf16 autocast needs no loss scaling; fp16 uses torch.amp.GradScaler. These are CUDA options:
asking for AMP on a CPU run is a one-line error (CPU autocast with BatchNorm is slow and not
what the recipes were tuned with), not a silent fallback.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dtrain.config import TrainConfig
from dtrain.data.gpu_defaults import AUTO, batch_format
from dtrain.errors import ConfigError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# train.amp: full fp32, an autocast dtype, or auto (bf16 on CUDA, else none: data/gpu_defaults.py).
AMP_CHOICES = ("none", *AMP_DTYPES, AUTO)
# A fresh autocast context per call (torch.autocast with its device and dtype bound).
Autocast = Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass
class Precision:
    autocast: Autocast | None  # None: full fp32
    scaler: torch.amp.GradScaler | None  # fp16 only
    channels_last: bool

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self.autocast() if self.autocast is not None else contextlib.nullcontext()


def setup_precision(train: TrainConfig, device: torch.device) -> Precision:
    if train.amp != "none" and device.type != "cuda":
        raise ConfigError(
            f"train.amp={train.amp} needs a CUDA device, and this run is on {device.type}; "
            "use train.amp=none on CPU"
        )
    if train.amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.amp=bf16 needs a GPU with bfloat16 (Ampere or newer); use train.amp=fp16")
    autocast = None
    if train.amp != "none":
        autocast = functools.partial(torch.autocast, device_type="cuda", dtype=AMP_DTYPES[train.amp])
    scaler = torch.amp.GradScaler("cuda") if train.amp == "fp16" else None
    return Precision(autocast=autocast, scaler=scaler, channels_last=wants_channels_last(train, device))


def wants_channels_last(train: TrainConfig, device: torch.device) -> bool:
    """train.channels_last, `auto` decided for `device` as the loaders decide it (the string
    "auto" itself would be truthy)."""
    return batch_format(train.amp, train.channels_last, device).channels_last


def prepare_model(model: nn.Module, train: TrainConfig, device: torch.device) -> nn.Module:
    """Move to the device (and to channels_last when asked); done before DDP wraps the model."""
    model = model.to(device)
    if wants_channels_last(train, device):
        # Module.to takes memory_format= (torch's docs); its type overloads leave it out.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def maybe_compile(model: nn.Module, train: TrainConfig) -> Callable[..., Any]:
    """torch.compile the (wrapped) model when train.compile; DDP-compatible since torch 2.1."""
    return torch.compile(model) if train.compile else model
