"""Per-channel statistics of image batches: for tests and for checking data.mean / data.std."""

from __future__ import annotations

from collections.abc import Iterable

import torch


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
    if count == 0:
        raise ValueError("no batches to measure")
    mean = total / count
    return mean, (total_sq / count - mean ** 2).clamp_min(0).sqrt()
