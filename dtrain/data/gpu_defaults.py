"""The batch format (dtype, memory format) that train.amp and train.channels_last ask of a loader,
and data.loader=auto for a torch device.

What `auto` means for each setting is decided in one place, dtrain.device_defaults (the resolver
applies it to a run's config once the device is known); here it is read for a torch.device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dtrain import device_defaults
from dtrain.device_defaults import AUTO

__all__ = ["AMP_INPUT_DTYPES", "AUTO", "BatchFormat", "auto_loader", "batch_format"]

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
    dtype = AMP_INPUT_DTYPES[device_defaults.auto_amp(amp, device.type)] if cuda else torch.float32
    return BatchFormat(dtype, device_defaults.auto_channels_last(channels_last, device.type))


def auto_loader(name: str, device: torch.device | str) -> str:
    """data.loader=auto -> gpu on CUDA, torch elsewhere."""
    return device_defaults.auto_loader(name, torch.device(device).type)
