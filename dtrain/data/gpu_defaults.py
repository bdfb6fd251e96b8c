"""GPU-first defaults: what `auto` means for train.amp, train.channels_last and data.loader.

The ImageNet recipes say `auto` for all three: on CUDA that is bf16 autocast, channels_last and
the gpu loader (the papers' numbers do not depend on fp32); on CPU it is fp32, NCHW and the torch
loader. Any explicit value in a recipe or an override (train.amp=none, data.loader=dali) wins.
"""

from __future__ import annotations

import dataclasses

import torch

from dtrain.config import RunConfig

AUTO = "auto"


def auto_loader(name: str, device: torch.device) -> str:
    """data.loader=auto -> gpu on CUDA, torch elsewhere."""
    if name != AUTO:
        return name
    return "gpu" if device.type == "cuda" else "torch"


def resolve_cuda_defaults(cfg: RunConfig, device: torch.device) -> RunConfig:
    """cfg with every `auto` of train.amp / train.channels_last / data.loader decided for `device`."""
    cuda = device.type == "cuda"
    amp = ("bf16" if cuda else "none") if cfg.train.amp == AUTO else cfg.train.amp
    channels_last = cuda if cfg.train.channels_last == AUTO else cfg.train.channels_last
    return dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, amp=amp, channels_last=channels_last),
        data=dataclasses.replace(cfg.data, loader=auto_loader(cfg.data.loader, device)))
