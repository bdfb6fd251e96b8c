"""Pixel statistics of the training split, written with the dataset by `dtrain prepare`.

R1 subtracts the per-pixel mean (sec. 3.4, 4.2): a mean image over the training images, which
needs images of one size (CIFAR, the digits). OUT/per_pixel_mean.npy holds it as float32 HxWx3 in
[0, 1] (the images as the loaders decode them, i.e. after JPEG); OUT/pixel_stats.json holds it
beside the per-channel mean and std of the same pixels, so every dataset (CIFAR-100 too) gets its
own statistics. Datasets of mixed image sizes (ImageNet) get no mean image: the loaders then
refuse data.normalize=per_pixel_mean with a message naming data.normalize=channel.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from . import layout

PER_PIXEL_MEAN = layout.PER_PIXEL_MEAN
PIXEL_STATS = layout.PIXEL_STATS
STATS_SPLIT = "train"


def _read_bytes(out: Path, row: dict) -> bytes:
    if row["shard"]:
        fd = os.open(out / row["shard"], os.O_RDONLY)
        try:
            return os.pread(fd, int(row["bytes"]), int(row["offset"]))
        finally:
            os.close(fd)
    return (out / row["jpeg_path"]).read_bytes()


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


class PixelAccumulator:
    """Float64 sums of `split`'s accepted images, fed one shard's rows at a time (prepare streams
    the manifest); gives up once two sizes are seen."""

    def __init__(self, out: Path, split: str = STATS_SPLIT):
        self.out, self.split = out, split
        self.total = self.total_sq = None
        self.count, self.mixed_sizes = 0, False

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            if self.mixed_sizes or row["split"] != self.split or row["status"] == layout.STATUS_REJECTED:
                continue
            pixels = _decode(_read_bytes(self.out, row)) / 255.0
            if self.total is not None and pixels.shape != self.total.shape:
                self.mixed_sizes, self.total, self.total_sq = True, None, None
                continue
            self.total = pixels if self.total is None else self.total + pixels
            self.total_sq = pixels ** 2 if self.total_sq is None else self.total_sq + pixels ** 2
            self.count += 1

    def result(self) -> dict | None:
        """Mean image and per-channel mean/std (values in [0, 1]), or None (no images, mixed sizes)."""
        if self.mixed_sizes or not self.count:
            return None
        mean_image = self.total / self.count
        channel_mean = mean_image.mean(axis=(0, 1))
        channel_std = np.sqrt(np.maximum((self.total_sq / self.count).mean(axis=(0, 1)) - channel_mean ** 2, 0))
        return {"mean_image": mean_image, "channel_mean": channel_mean, "channel_std": channel_std,
                "count": self.count}


def pixel_statistics(out: Path, rows: list[dict], split: str = STATS_SPLIT) -> dict | None:
    """Statistics of rows held in memory (what PixelAccumulator gathers shard by shard)."""
    accumulator = PixelAccumulator(out, split)
    accumulator.add(rows)
    return accumulator.result()


def write_pixel_statistics(out: Path, stats: dict | None, split: str = STATS_SPLIT) -> bool:
    """Write OUT/per_pixel_mean.npy and OUT/pixel_stats.json; False when there are none (mixed sizes)."""
    if stats is None:
        return False
    tmp = out / (PER_PIXEL_MEAN + ".tmp.npy")
    np.save(tmp, stats["mean_image"].astype(np.float32))
    os.replace(tmp, out / PER_PIXEL_MEAN)
    record = {"split": split, "images": stats["count"], "height": int(stats["mean_image"].shape[0]),
              "width": int(stats["mean_image"].shape[1]), "per_pixel_mean": PER_PIXEL_MEAN,
              "channel_mean": [round(float(v), 6) for v in stats["channel_mean"]],
              "channel_std": [round(float(v), 6) for v in stats["channel_std"]]}
    (out / PIXEL_STATS).write_text(json.dumps(record, indent=1) + "\n")
    return True
