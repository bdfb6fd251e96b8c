"""Pixel statistics of the training split, written with the dataset by `dtrain prepare`.

R1 subtracts the per-pixel mean (sec. 3.4, 4.2): a mean image over the training images.
OUT/per_pixel_mean.npy holds it as float32 HxWx3 in [0, 1] (the images as the loaders decode them,
i.e. after JPEG); OUT/pixel_stats.json holds its geometry beside the per-channel mean and std, so
every dataset (CIFAR-100 too) gets its own statistics.

Images of one size (CIFAR, the digits) give the mean image at that size. Images of mixed sizes
(ImageNet) have no common pixel grid, so their mean image is taken at the network's input
geometry: each image's centre VIEW_CROP crop of its shorter side resized to VIEW_RESIZE (224 from
256: R1's crop size, and the centre view of dtrain's `center` test), as the loaders resize and crop
(PIL bilinear). data.normalize=per_pixel_mean subtracts it from every 224 training crop at the
crop's pixel positions. For such datasets the JSON gives the channel mean of those views and no
channel std (see PixelSums.result).

The sums are exact integers (uint8 pixels and their squares in int64), so shards can be summed in
any order and a carved-out minival image subtracted again without rounding: each shard worker sums
its own train images from the decode it already did (dtrain_prep.shard_writer) and saves them
beside its manifest fragment; the parent only adds the shards up. Images of the first size a shard
sees are summed as they are; only images of another size pay for a resize to the view; when sums of
different sizes meet, the one-size sums are carried to the view geometry as a whole (the resize is
linear: the same as resizing each image but for PIL's 8-bit rounding after each pass, within a
level per image, which averages out over the images).
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
VIEW_RESIZE, VIEW_CROP = 256, 224  # the input geometry of a mixed-size dataset's mean image


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


def view_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The source box of the centre VIEW_CROP crop of the image with its shorter side resized to
    VIEW_RESIZE (dtrain.data.transforms.resize_shorter_side, then center_crop): resizing that box
    to VIEW_CROP x VIEW_CROP gives the same filter taps as resizing the whole image and cropping."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = long if short == VIEW_RESIZE else int(VIEW_RESIZE * long / short)
    new_w, new_h = (VIEW_RESIZE, new_long) if width <= height else (new_long, VIEW_RESIZE)
    if short == VIEW_RESIZE:
        new_w, new_h = width, height
    left, top = int(round((new_w - VIEW_CROP) / 2.0)), int(round((new_h - VIEW_CROP) / 2.0))
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + VIEW_CROP) * sx, (top + VIEW_CROP) * sy


def centre_view(pixels: np.ndarray) -> np.ndarray:
    """uint8 VIEW_CROP x VIEW_CROP x 3: the image at the input geometry, PIL bilinear as the loaders."""
    height, width = pixels.shape[:2]
    image = Image.fromarray(pixels)
    return np.asarray(image.resize((VIEW_CROP, VIEW_CROP), Image.Resampling.BILINEAR, box=view_box(width, height)))


def view_of_sum(total: np.ndarray) -> np.ndarray:
    """float64 VIEW_CROP x VIEW_CROP x 3: centre_view applied to a sum of images of one size, without
    the per-image 8-bit rounding (PIL's bilinear resize is linear in the pixels)."""
    height, width = total.shape[:2]
    box, peak = view_box(width, height), max(float(total.max()), 1.0)
    channels = [np.asarray(Image.fromarray((total[..., c] / peak).astype(np.float32), mode="F").resize(
        (VIEW_CROP, VIEW_CROP), Image.Resampling.BILINEAR, box=box), dtype=np.float64) for c in range(total.shape[2])]
    return np.stack(channels, axis=-1) * peak


# Running sums live in uint32 (a quarter of int64's memory traffic: summing a 500x375 image costs
# ~0.2 ms, not ~1.4 ms) and move into the int64 totals before 65,536 squares of 255 could overflow.
_RUNNING_IMAGES = 65_536


class PixelSums:
    """Exact sums over uint8 RGB images: at their own size while they share one (the first seen),
    the others at the input geometry (view_total, float64 for sums carried over whole)."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None     # int64 HxWx3 of the images of the first size
        self.total_sq: np.ndarray | None = None  # set together with total
        self.count = 0                           # all images
        self.view_total: np.ndarray | None = None  # images of other sizes, at VIEW_CROP
        self.view_count = 0
        self._running: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # uint32 sum, uint32 sum
        self._pending = 0                        # of squares, uint16 scratch; images in the running sums

    @property
    def mixed_sizes(self) -> bool:
        """Whether summing stopped at a second image size: never, other sizes are summed at the view
        geometry (shard_writer reads this to skip the decode of images that would not count)."""
        return False

    @property
    def one_size(self) -> bool:
        return self.view_count == 0

    def _native_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """total and total_sq, once the first image size is known."""
        assert self.total is not None and self.total_sq is not None
        return self.total, self.total_sq

    def _flush(self) -> None:
        if self._pending:
            assert self._running is not None and self.total is not None and self.total_sq is not None
            self.total += self._running[0]
            self.total_sq += self._running[1]
            self._running[0][...] = 0
            self._running[1][...] = 0
            self._pending = 0

    def _add_view(self, view: np.ndarray, count: int) -> None:
        """Add `count` images' sum at the view geometry (count -1: take one back)."""
        if self.view_total is None:
            self.view_total = np.zeros((VIEW_CROP, VIEW_CROP, 3), np.float64)
        self.view_total += view
        self.view_count += count

    def _native(self, shape: tuple) -> bool:
        """Whether an image of `shape` is summed at its own size (the first size seen)."""
        if self.total is None and not self.count:
            self.total, self.total_sq = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        return self.total is not None and shape == self.total.shape

    def add(self, pixels: np.ndarray) -> None:
        native = self._native(pixels.shape)
        self.count += 1
        if not native:
            self._add_view(centre_view(pixels), 1)
            return
        if self._running is None:
            shape = pixels.shape
            self._running = (np.zeros(shape, np.uint32), np.zeros(shape, np.uint32), np.empty(shape, np.uint16))
        running_sum, running_squares, scratch = self._running
        np.add(running_sum, pixels, out=running_sum)
        np.multiply(pixels, pixels, out=scratch, dtype=np.uint16)  # 255**2 fits in 16 bits
        np.add(running_squares, scratch, out=running_squares)
        self._pending += 1
        if self._pending == _RUNNING_IMAGES:
            self._flush()

    def subtract(self, pixels: np.ndarray) -> None:
        """Take back an image added before (a training image carved out into minival)."""
        native = self._native(pixels.shape)
        self.count -= 1
        if not native:
            self._add_view(-centre_view(pixels).astype(np.float64), -1)
            return
        self._flush()
        total, total_sq = self._native_sums()
        wide = pixels.astype(np.int64)
        total -= wide
        total_sq -= wide * wide

    def _native_count(self) -> int:
        return self.count - self.view_count

    def merge(self, other: PixelSums) -> None:
        other._flush()
        self._flush()
        if other.view_total is not None:
            self._add_view(other.view_total, other.view_count)
        if other.total is not None:
            other_total, other_total_sq = other._native_sums()
            if self.total is None:
                self.total, self.total_sq = other_total.copy(), other_total_sq.copy()
            elif other_total.shape == self.total.shape:
                total, total_sq = self._native_sums()
                total += other_total
                total_sq += other_total_sq
            else:  # two sizes meet: the other's one-size sums go to the view geometry as a whole
                self._add_view(view_of_sum(other_total), other._native_count())
        self.count += other.count

    def to_bytes(self) -> bytes:
        self._flush()
        buffer = io.BytesIO()
        arrays: dict[str, np.ndarray] = {}
        if self.total is not None:
            arrays["total"], arrays["total_sq"] = self._native_sums()
        if self.view_total is not None:
            arrays.update(view_total=self.view_total, view_count=np.asarray(self.view_count, np.int64))
        np.savez(buffer, allow_pickle=False, count=np.int64(self.count), mixed_sizes=np.bool_(False), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> PixelSums | None:
        """The saved sums, or None for a file of an older dtrain that stopped at a second size."""
        sums = cls()
        with np.load(path) as saved:
            if bool(saved["mixed_sizes"]):
                return None
            sums.count = int(saved["count"])
            if "total" in saved:
                sums.total, sums.total_sq = saved["total"], saved["total_sq"]
            if "view_total" in saved:
                sums.view_total, sums.view_count = saved["view_total"], int(saved["view_count"])
        return sums

    def result(self) -> dict | None:
        """Mean image and per-channel mean/std (values in [0, 1]), or None (no images).

        One size: the mean image at that size, the channel mean and std of all pixels (exact).
        Mixed sizes: the mean image at the input geometry and its channel mean; no channel std
        (carrying the one-size sums of squares over whole would not give the views' squares)."""
        self._flush()
        if not self.count:
            return None
        if self.one_size:
            total, total_sq = self._native_sums()
            mean_image = total / (self.count * 255.0)
            channel_mean = mean_image.mean(axis=(0, 1))
            mean_square = (total_sq / (self.count * 255.0 ** 2)).mean(axis=(0, 1))
            channel_std = np.sqrt(np.maximum(mean_square - channel_mean ** 2, 0))
            return {"mean_image": mean_image, "channel_mean": channel_mean, "channel_std": channel_std,
                    "count": self.count, "geometry": "native"}
        assert self.view_total is not None
        views = self.view_total + view_of_sum(self._native_sums()[0]) if self._native_count() else self.view_total
        mean_image = views / (self.count * 255.0)
        return {"mean_image": mean_image, "channel_mean": mean_image.mean(axis=(0, 1)), "channel_std": None,
                "count": self.count, "geometry": f"centre {VIEW_CROP} of shorter side {VIEW_RESIZE}"}


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
            if _counted(row, self.split):
                self.sums.add(decode_rgb(read_stored_bytes(self.out, row)))

    def add_shard(self, saved: Path, rows: list[dict], source_split: str) -> None:
        """rows: the shard's rows after the minival carve; saved: its worker's sums file."""
        if source_split != self.split:
            return
        shard = PixelSums.from_file(saved) if saved.exists() else None
        if shard is None:  # no saved sums, or an older dtrain's that stopped at a second size
            self.add_rows(rows)
            return
        self.sums.merge(shard)
        for row in rows:  # carved out of train after the worker summed it
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
    """Write OUT/per_pixel_mean.npy and OUT/pixel_stats.json; False when there are none (no images)."""
    if stats is None:
        return False
    tmp = out / (PER_PIXEL_MEAN + ".tmp.npy")
    np.save(tmp, stats["mean_image"].astype(np.float32))
    os.replace(tmp, out / PER_PIXEL_MEAN)
    std = stats["channel_std"]
    record = {"split": split, "images": stats["count"], "height": int(stats["mean_image"].shape[0]),
              "width": int(stats["mean_image"].shape[1]), "per_pixel_mean": PER_PIXEL_MEAN,
              "geometry": stats["geometry"], "channel_mean": [round(float(v), 6) for v in stats["channel_mean"]],
              "channel_std": None if std is None else [round(float(v), 6) for v in std]}
    (out / PIXEL_STATS).write_text(json.dumps(record, indent=1) + "\n")
    return True
