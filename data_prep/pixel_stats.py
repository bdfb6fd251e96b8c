"""Pixel statistics of the training split, written with the dataset by `dtrain prepare`.

R1 subtracts the per-pixel mean (sec. 3.4, 4.2): a mean image over the training images, which
needs images of one size (CIFAR, the digits). OUT/per_pixel_mean.npy holds it as float32 HxWx3 in
[0, 1] (the images as the loaders decode them, i.e. after JPEG); OUT/pixel_stats.json holds it
beside the per-channel mean and std of the same pixels, so every dataset (CIFAR-100 too) gets its
own statistics. Datasets of mixed image sizes (ImageNet) get no mean image: the loaders then
refuse data.normalize=per_pixel_mean with a message naming data.normalize=channel.

The sums are exact integers (uint8 pixels and their squares in int64), so shards can be summed in
any order and a carved-out minival image subtracted again without rounding: each shard worker sums
its own train images from the decode it already did (data_prep/shard_writer.py) and saves them
beside its manifest fragment; the parent only adds the shards up.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from . import layout
from .images import only_our_pixel_limit

PER_PIXEL_MEAN = layout.PER_PIXEL_MEAN
PIXEL_STATS = layout.PIXEL_STATS
STATS_SPLIT = "train"


def read_stored_bytes(out: Path, row: dict) -> bytes:
    if row["shard"]:
        fd = os.open(out / row["shard"], os.O_RDONLY)
        try:
            return os.pread(fd, int(row["bytes"]), int(row["offset"]))
        finally:
            os.close(fd)
    return (out / row["jpeg_path"]).read_bytes()


def decode_rgb(data: bytes) -> np.ndarray:
    """uint8 HxWx3, as PIL (the torch loader) decodes the stored JPEG (--max-pixels admitted it)."""
    with only_our_pixel_limit(), Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


# Running sums live in uint32 (a quarter of int64's memory traffic: summing a 500x375 image costs
# ~0.2 ms, not ~1.4 ms) and move into the int64 totals before 65,536 squares of 255 could overflow.
_RUNNING_IMAGES = 65_536


class PixelSums:
    """Exact sums over uint8 RGB images of one size; gives up (mixed_sizes) once two sizes are seen."""

    def __init__(self):
        self.total = self.total_sq = None      # int64 HxWx3
        self.count, self.mixed_sizes = 0, False
        self._running = None                   # uint32 sum, uint32 sum of squares, uint16 scratch
        self._pending = 0                      # images in the running sums

    def _give_up(self) -> None:
        self.mixed_sizes, self.total, self.total_sq, self._running, self._pending = True, None, None, None, 0

    def _fits(self, shape: tuple) -> bool:
        if self.total is None:
            self.total, self.total_sq = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        elif shape != self.total.shape:
            self._give_up()
        return not self.mixed_sizes

    def _flush(self) -> None:
        if self._pending:
            self.total += self._running[0]
            self.total_sq += self._running[1]
            self._running[0][...] = 0
            self._running[1][...] = 0
            self._pending = 0

    def add(self, pixels: np.ndarray) -> None:
        if self.mixed_sizes or not self._fits(pixels.shape):
            return
        if self._running is None:
            shape = pixels.shape
            self._running = (np.zeros(shape, np.uint32), np.zeros(shape, np.uint32), np.empty(shape, np.uint16))
        running_sum, running_squares, scratch = self._running
        np.add(running_sum, pixels, out=running_sum)
        np.multiply(pixels, pixels, out=scratch, dtype=np.uint16)  # 255**2 fits in 16 bits
        np.add(running_squares, scratch, out=running_squares)
        self.count += 1
        self._pending += 1
        if self._pending == _RUNNING_IMAGES:
            self._flush()

    def subtract(self, pixels: np.ndarray) -> None:
        """Take back an image added before (a training image carved out into minival)."""
        if self.mixed_sizes or not self._fits(pixels.shape):
            return
        wide = pixels.astype(np.int64)
        self.total -= wide
        self.total_sq -= wide * wide
        self.count -= 1

    def merge(self, other: "PixelSums") -> None:
        other._flush()
        if self.mixed_sizes or not other.count and not other.mixed_sizes:
            return
        if other.mixed_sizes or (self.total is not None and other.total.shape != self.total.shape):
            self._give_up()
            return
        if self.total is None:
            self.total, self.total_sq = other.total.copy(), other.total_sq.copy()
        else:
            self.total += other.total
            self.total_sq += other.total_sq
        self.count += other.count

    def to_bytes(self) -> bytes:
        self._flush()
        buffer = io.BytesIO()
        arrays = {} if self.mixed_sizes or self.total is None else {"total": self.total, "total_sq": self.total_sq}
        np.savez(buffer, count=np.int64(self.count), mixed_sizes=np.bool_(self.mixed_sizes), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> "PixelSums":
        sums = cls()
        with np.load(path) as saved:
            sums.count, sums.mixed_sizes = int(saved["count"]), bool(saved["mixed_sizes"])
            if "total" in saved:
                sums.total, sums.total_sq = saved["total"], saved["total_sq"]
        return sums

    def result(self) -> dict | None:
        """Mean image and per-channel mean/std (values in [0, 1]), or None (no images, mixed sizes)."""
        self._flush()
        if self.mixed_sizes or not self.count:
            return None
        mean_image = self.total / (self.count * 255.0)
        channel_mean = mean_image.mean(axis=(0, 1))
        mean_square = (self.total_sq / (self.count * 255.0 ** 2)).mean(axis=(0, 1))
        channel_std = np.sqrt(np.maximum(mean_square - channel_mean ** 2, 0))
        return {"mean_image": mean_image, "channel_mean": channel_mean, "channel_std": channel_std,
                "count": self.count}


def _counted(row: dict, split: str) -> bool:
    return row["split"] == split and row["status"] != layout.STATUS_REJECTED


class PixelAccumulator:
    """The train split's sums in the parent, one shard at a time (prepare streams the manifest):
    a shard's saved sums when its worker left them, else a decode of its rows (a shard written by
    an older dtrain); minus the images the minival carver moved out of train."""

    def __init__(self, out: Path, split: str = STATS_SPLIT):
        self.out, self.split = out, split
        self.sums = PixelSums()

    def add_rows(self, rows: list[dict]) -> None:
        for row in rows:
            if self.sums.mixed_sizes:
                return
            if _counted(row, self.split):
                self.sums.add(decode_rgb(read_stored_bytes(self.out, row)))

    def add_shard(self, saved: Path, rows: list[dict], source_split: str) -> None:
        """rows: the shard's rows after the minival carve; saved: its worker's sums file."""
        if self.sums.mixed_sizes or source_split != self.split:
            return
        if not saved.exists():
            self.add_rows(rows)
            return
        self.sums.merge(PixelSums.from_file(saved))
        for row in rows:  # carved out of train after the worker summed it
            if self.sums.mixed_sizes:
                return
            if row["split"] != self.split and row["status"] != layout.STATUS_REJECTED:
                self.sums.subtract(decode_rgb(read_stored_bytes(self.out, row)))

    def result(self) -> dict | None:
        return self.sums.result()


def pixel_statistics(out: Path, rows: list[dict], split: str = STATS_SPLIT) -> dict | None:
    """Statistics of rows held in memory, decoded here (what the shard workers sum shard by shard)."""
    accumulator = PixelAccumulator(out, split)
    accumulator.add_rows(rows)
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
