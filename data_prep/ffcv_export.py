"""FFCV .beton per split, written by FFCV's own DatasetWriter from the finished webdataset shards."""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import layout

FFCV_MODES = ("jpg", "raw", "proportion", "smart")


@dataclass(frozen=True)
class FfcvOptions:
    mode: str | None = None            # None: "raw" for tiny images (digits, CIFAR), else "jpg"
    max_side: int | None = None        # RGBImageField(max_resolution=...)
    jpeg_quality: int = 90
    compress_probability: float = 0.5  # mode "proportion": share of images stored as JPEG


def ffcv_available() -> bool:
    try:
        import ffcv  # noqa: F401
    except ImportError:
        return False
    return True


class ShardImages:
    """An indexable dataset over accepted manifest rows: (HxWx3 uint8, label), read by offset."""

    def __init__(self, out: str, rows: list[dict]):
        self.out = out
        self.items = [(row["shard"], row["offset"], row["bytes"], row["label"]) for row in rows]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        shard, offset, size, label = self.items[index]
        with open(os.path.join(self.out, shard), "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), int(label)


def write_beton(out: Path, split: str, accepted_rows: list[dict], options: FfcvOptions,
                small_images: bool, workers: int, show_progress: bool = True) -> Path:
    import ffcv.writer
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter
    from tqdm import tqdm

    # DatasetWriter always draws its own bar; --quiet and non-terminal runs should stay silent.
    ffcv.writer.tqdm = functools.partial(tqdm, desc=f"ffcv {split}", disable=not show_progress)

    final = out / layout.ffcv_name(split)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    mode = options.mode or ("raw" if small_images else "jpg")
    image_field = RGBImageField(write_mode=mode, max_resolution=options.max_side,
                                jpeg_quality=options.jpeg_quality,
                                compress_probability=options.compress_probability)
    writer = DatasetWriter(str(tmp), {"image": image_field, "label": IntField()}, num_workers=workers)
    writer.from_indexed_dataset(ShardImages(str(out), accepted_rows), chunksize=64)
    os.replace(tmp, final)
    return final


def beton_count(path: Path) -> int:
    from ffcv.reader import Reader

    return int(Reader(str(path)).num_samples)
