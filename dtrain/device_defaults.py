"""GPU-first defaults: what `auto` means for train.amp, train.channels_last and data.loader on a
device type ("cuda" or "cpu").

The ImageNet recipes say `auto` for all three: on CUDA that is bf16 autocast, channels_last and
the gpu loader (the papers' numbers do not depend on fp32); on CPU it is fp32, NCHW and the torch
loader. Any explicit value in a recipe or an override (train.amp=none, data.loader=dali) wins.
The resolver (dtrain.resolve) applies these once the device is known; the loaders
(dtrain.data.gpu_defaults) read the same rules for a batch's format. Standard library only, so
that resolving a config imports no torch.
"""

from __future__ import annotations

import dataclasses

from dtrain.config import RunConfig

AUTO = "auto"


def auto_amp(amp: str, device_type: str) -> str:
    """train.amp=auto -> bf16 on CUDA, none elsewhere."""
    if amp != AUTO:
        return amp
    return "bf16" if device_type == "cuda" else "none"


def auto_channels_last(channels_last: bool | str, device_type: str) -> bool:
    """train.channels_last=auto -> true on CUDA, false elsewhere."""
    return device_type == "cuda" if channels_last == AUTO else bool(channels_last)


def auto_loader(name: str, device_type: str) -> str:
    """data.loader=auto -> gpu on CUDA, torch elsewhere."""
    if name != AUTO:
        return name
    return "gpu" if device_type == "cuda" else "torch"


def apply_device_defaults(cfg: RunConfig, device_type: str) -> RunConfig:
    """cfg with every `auto` of train.amp / train.channels_last / data.loader decided for `device_type`."""
    train = dataclasses.replace(cfg.train, amp=auto_amp(cfg.train.amp, device_type),
                                channels_last=auto_channels_last(cfg.train.channels_last, device_type))
    data = dataclasses.replace(cfg.data, loader=auto_loader(cfg.data.loader, device_type))
    return dataclasses.replace(cfg, train=train, data=data)
