"""GPU-first defaults: what `auto` means for train.amp, train.channels_last and data.loader,
and the batch format (dtype, memory format) those settings ask of a loader.

The ImageNet recipes say `auto` for all three: on CUDA that is bf16 autocast, channels_last and
the gpu loader (the papers' numbers do not depend on fp32); on CPU it is fp32, NCHW and the torch
loader. Any explicit value in a recipe or an override (train.amp=none, data.loader=dali) wins.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from dtrain.config import RunConfig

AUTO = "auto"

# train.amp -> the dtype autocast computes the first convolution in (what a loader may emit)
AMP_INPUT_DTYPES = {"none": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class BatchFormat:
    """What a run feeds its model: loaders that can emit it (LoaderBuilders.formats) do, so the
    engine's autocast cast and channels_last copy become no-ops; the others emit float32 NCHW."""

    dtype: torch.dtype = torch.float32
    channels_last: bool = False


def batch_format(amp: str, channels_last: bool | str, device: torch.device) -> BatchFormat:
    """The BatchFormat of train.amp / train.channels_last (`auto` decided for `device`). AMP is a
    CUDA option (the engines refuse it elsewhere), so off CUDA the dtype is always float32; the
    memory format follows train.channels_last on any device, as the engines' conversion does."""
    cuda = device.type == "cuda"
    amp = ("bf16" if cuda else "none") if amp == AUTO else amp
    channels_last = cuda if channels_last == AUTO else bool(channels_last)
    return BatchFormat(AMP_INPUT_DTYPES[amp] if cuda else torch.float32, channels_last)


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
