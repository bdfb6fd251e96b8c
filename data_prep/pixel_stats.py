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

PER_PIXEL_MEAN = "per_pixel_mean.npy"
PIXEL_STATS = "pixel_stats.json"
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


def pixel_statistics(out: Path, rows: list[dict], split: str = STATS_SPLIT) -> dict | None:
    """Mean image and per-channel mean/std (float64 sums, values in [0, 1]) of `split`'s accepted
    images, or None when they are not all of one size."""
    chosen = [r for r in rows if r["split"] == split and r["status"] != layout.STATUS_REJECTED]
    if not chosen or len({(int(r["width"]), int(r["height"])) for r in chosen}) != 1:
        return None
    total = total_sq = None
    for row in chosen:
        pixels = _decode(_read_bytes(out, row)) / 255.0
        total = pixels if total is None else total + pixels
        total_sq = pixels ** 2 if total_sq is None else total_sq + pixels ** 2
    count = len(chosen)
    mean_image = total / count
    channel_mean = mean_image.mean(axis=(0, 1))
    channel_std = np.sqrt(np.maximum((total_sq / count).mean(axis=(0, 1)) - channel_mean ** 2, 0))
    return {"mean_image": mean_image, "channel_mean": channel_mean, "channel_std": channel_std, "count": count}


def write_pixel_statistics(out: Path, rows: list[dict], split: str = STATS_SPLIT) -> bool:
    """Write OUT/per_pixel_mean.npy and OUT/pixel_stats.json; False when the images vary in size."""
    stats = pixel_statistics(out, rows, split)
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
