"""Per-channel statistics of image batches (for tests and for checking data.mean / data.std), and
the normalisation data.normalize chooses: per channel, or R1's per-pixel mean image (CIFAR: at the
images' size; ImageNet's mixed sizes: at the 224 input, centre crops of shorter side 256, see
dtrain_prep.pixel_stats)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from dtrain.config import DataConfig
from dtrain.errors import ConfigError
from dtrain_prep import layout

from .normalize import Normalize, PerPixelMeanNormalize


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation per channel of an NCHW (or CHW) batch, over all pixels."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"expected an NCHW or CHW tensor, got shape {tuple(images.shape)}")
    per_channel = images.double().transpose(0, 1).reshape(images.shape[1], -1)
    return per_channel.mean(dim=1), per_channel.std(dim=1, unbiased=False)


def loader_channel_stats(batches: Iterable[torch.Tensor], max_batches: int | None = None):
    """Mean and std per channel over the image batches of an iterable (e.g. a train loader's
    images, unnormalised with mean=0, std=1): sums in float64, one pass."""
    total = total_sq = None
    count = 0
    for i, images in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        per_channel = images.double().transpose(0, 1).reshape(images.shape[1], -1)
        sums, sq = per_channel.sum(dim=1), (per_channel ** 2).sum(dim=1)
        total = sums if total is None else total + sums
        total_sq = sq if total_sq is None else total_sq + sq
        count += per_channel.shape[1]
    if total is None or total_sq is None or count == 0:
        raise ValueError("no batches to measure")
    mean = total / count
    return mean, (total_sq / count - mean ** 2).clamp_min(0).sqrt()


# ---- data.normalize: what the loaders subtract and divide by ---------------------------------


def per_pixel_mean(root: str | Path) -> np.ndarray:
    """The HxWx3 mean image in [0, 1] that `dtrain prepare` stored with the dataset at `root`."""
    path = Path(root) / layout.PER_PIXEL_MEAN
    if not path.is_file():
        raise ConfigError(f"data.normalize=per_pixel_mean needs {path}, written by `dtrain prepare` (images of "
                          "mixed sizes: at the 224 input, since this release); re-run prepare (--overwrite) or set "
                          "data.normalize=channel")
    return np.load(path)


def _channel(data: DataConfig):
    return Normalize(data.mean, data.std)


def _per_pixel_mean(data: DataConfig):
    return PerPixelMeanNormalize(per_pixel_mean(data.root), data.std)


# data.normalize -> the Normalize it builds: per channel (data.mean / data.std), or R1's per-pixel
# mean image of the dataset, then / data.std.
NORMALIZATIONS = {"channel": _channel, "per_pixel_mean": _per_pixel_mean}


def build_normalize(data: DataConfig, loader: str | None = None):
    """The Normalize of data.normalize. The synthetic loader has no stored dataset: per channel."""
    name = "channel" if (loader or data.loader) == "synthetic" else data.normalize
    return NORMALIZATIONS[name](data)
