"""FFCV .beton per split, written by FFCV's DatasetWriter from the already-validated shard bytes.

In "jpg" mode an image that needs no resize is stored with the very bytes of its shard (the JPEG
the shard stage decoded in full to validate it): no second decode, no re-encode, so the FFCV
stage is a copy. Other modes and images over --ffcv-max-side go through FFCV's own encoder.
The page size is derived from the largest stored sample (FFCV's fixed 8 MiB cannot hold a large
raw image), and the sha256 of every sample's stored bytes is written beside the .beton for verify.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import layout
from .pixel_stats import decode_rgb

FFCV_MODES = ("jpg", "raw", "proportion", "smart")
FFCV_DEFAULT_PAGE_SIZE = 1 << 23       # DatasetWriter's default (8 MiB); never go below it
# Test hooks (environment, so that they reach the spawned FFCV process): a lower base page size,
# or a fixed page size (too small on purpose, to test a dying writer).
TEST_HOOK_BASE_PAGE = "DATA_PREP_TEST_HOOK_FFCV_BASE_PAGE"
TEST_HOOK_PAGE = "DATA_PREP_TEST_HOOK_FFCV_PAGE"
PAGE_MARGIN = 1 << 20                  # headroom for a re-encoded JPEG bigger than its raw pixels


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


@dataclass
class SplitColumns:
    """The accepted rows of one split as flat arrays (~40 bytes an image, not a dict per row)."""
    shards: list[str]
    shard_id: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    label: np.ndarray
    width: np.ndarray
    height: np.ndarray

    def __len__(self) -> int:
        return len(self.offset)


def read_split_columns(out: Path, split: str) -> SplitColumns:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(out / layout.MANIFEST, columns=["shard", "offset", "bytes", "label", "width", "height"],
                          filters=[("split", "=", split), ("status", "!=", layout.STATUS_REJECTED)])
    shards = table.column("shard").dictionary_encode().combine_chunks()
    column = lambda name, dtype: table.column(name).to_numpy().astype(dtype)  # noqa: E731
    return SplitColumns([str(s) for s in shards.dictionary.to_pylist()],
                        pc.cast(shards.indices, "int32").to_numpy(), column("offset", np.int64),
                        column("bytes", np.int64), column("label", np.int64),
                        column("width", np.int64), column("height", np.int64))


def _passthrough(columns: SplitColumns, mode: str, max_side: int | None) -> np.ndarray:
    """Which samples are stored as their shard's JPEG bytes."""
    if mode != "jpg":
        return np.zeros(len(columns), dtype=bool)
    if max_side is None:
        return np.ones(len(columns), dtype=bool)
    return np.maximum(columns.width, columns.height) <= max_side


def page_size_for(columns: SplitColumns, passthrough: np.ndarray, max_side: int | None) -> int:
    """The smallest power of two >= FFCV's default that holds the largest stored sample."""
    if os.environ.get(TEST_HOOK_PAGE):
        return int(os.environ[TEST_HOOK_PAGE])
    largest = int(columns.size[passthrough].max(initial=0))
    encoded = ~passthrough
    if encoded.any():
        scale = np.ones(int(encoded.sum()))
        sides = np.maximum(columns.width[encoded], columns.height[encoded])
        if max_side is not None:
            scale = np.minimum(1.0, max_side / sides)
        pixels = np.ceil(columns.width[encoded] * scale) * np.ceil(columns.height[encoded] * scale)
        largest = max(largest, int(pixels.max()) * 3 + PAGE_MARGIN)
    page = int(os.environ.get(TEST_HOOK_BASE_PAGE, FFCV_DEFAULT_PAGE_SIZE))
    while page < largest:
        page *= 2
    return page


class ShardImages:
    """An indexable dataset over one split's accepted samples, read from the shards by offset."""

    def __init__(self, out: str, columns: SplitColumns, passthrough: np.ndarray):
        self.out, self.columns, self.passthrough = out, columns, passthrough

    def __len__(self) -> int:
        return len(self.columns)

    def __getitem__(self, index: int):
        from .ffcv_writer import StoredJpeg

        c = self.columns
        with open(os.path.join(self.out, c.shards[c.shard_id[index]]), "rb") as handle:
            data = os.pread(handle.fileno(), int(c.size[index]), int(c.offset[index]))
        if self.passthrough[index]:
            return StoredJpeg(data, int(c.width[index]), int(c.height[index])), int(c.label[index])
        return decode_rgb(data), int(c.label[index])


def write_beton(out: Path, split: str, options: FfcvOptions, small_images: bool, workers: int,
                show_progress: bool = True) -> Path:
    from ffcv.fields import IntField, RGBImageField
    from tqdm import tqdm

    from .ffcv_writer import CheckedDatasetWriter, digest_image_field, shared_digests

    columns = read_split_columns(out, split)
    mode = options.mode or ("raw" if small_images else "jpg")
    passthrough = _passthrough(columns, mode, options.max_side)
    final = out / layout.ffcv_name(split)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    digests = shared_digests(len(columns))
    image_field = digest_image_field(RGBImageField(write_mode=mode, max_resolution=options.max_side,
                                                   jpeg_quality=options.jpeg_quality,
                                                   compress_probability=options.compress_probability), digests)
    with tqdm(total=len(columns), desc=f"ffcv {split}", unit="img", disable=not show_progress) as progress:
        writer = CheckedDatasetWriter(str(tmp), {"image": image_field, "label": IntField()},
                                      page_size=page_size_for(columns, passthrough, options.max_side),
                                      num_workers=workers, progress=progress)
        writer.from_indexed_dataset(ShardImages(str(out), columns, passthrough), chunksize=64)
    digest_path = out / layout.ffcv_digest_name(split)
    with open(digest_path.with_name(digest_path.name + ".tmp"), "wb") as handle:
        handle.write(digests.tobytes())
    os.replace(digest_path.with_name(digest_path.name + ".tmp"), digest_path)
    os.replace(tmp, final)  # last: a .beton in place is complete, with its digests beside it
    return final


def write_betons(out: Path, jobs: list[tuple[str, int]], options: FfcvOptions, small_images: bool,
                 show_progress: bool) -> None:
    """jobs: (split, writer processes) for every .beton still to write."""
    for split, workers in jobs:
        write_beton(out, split, options, small_images, workers, show_progress)


def stored_digests(path: Path) -> np.ndarray:
    """sha256 of each sample's stored image bytes, read back from a .beton (FFCV's Reader)."""
    import hashlib

    from ffcv.reader import Reader

    reader = Reader(str(path))
    table = np.sort(reader.alloc_table, order="sample_id")
    image_ptr = reader.metadata["f0"]["data_ptr"]
    result = np.zeros((int(reader.num_samples), 32), dtype="<u1")
    with open(path, "rb") as handle:
        for entry in table:
            sample = int(entry["sample_id"])
            if int(entry["ptr"]) != int(image_ptr[sample]):
                continue
            data = os.pread(handle.fileno(), int(entry["size"]), int(entry["ptr"]))
            result[sample] = np.frombuffer(hashlib.sha256(data).digest(), dtype="<u1")
    return result
