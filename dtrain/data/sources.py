"""Where images come from: a prepared dataset (manifest + webdataset shards or JPEG files) or
random synthetic images. A source maps a sample index of a split to (PIL image, label).

The prepared layout is the contract with data_prep (see dtrain_prep.layout): rows of
OUT/manifest.parquet whose status is not "rejected", ordered by `index`; each JPEG is `bytes`
bytes at `offset` inside the tar `shard` (so no tarfile parsing is needed), or the file
`jpeg_path`, both relative to OUT.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from dtrain.errors import DtrainError
from dtrain_prep import layout

SOURCES = ("shards", "files")  # data.source of the torch loader
SYNTHETIC_SEED = 20151210  # fixed: the synthetic dataset is the same in every run
# Open shard descriptors kept per process: ImageNet has ~1,300 shards of 1,000 images and the
# usual limit is 1,024 open files; reopening costs microseconds next to a JPEG decode.
MAX_OPEN_SHARDS = 64


@dataclass
class ManifestSplit:
    """The accepted samples of one split, in `index` order, as numpy/Arrow arrays.

    No Python object per sample: forked loader workers then share these pages instead of
    copying them as reference counts change (torch DataLoader's copy-on-write memory growth).
    """

    root: Path
    split: str
    labels: np.ndarray  # int64
    widths: np.ndarray
    heights: np.ndarray
    shard_ids: np.ndarray  # int32 index into shard_names
    shard_names: list[str]
    offsets: np.ndarray  # int64
    sizes: np.ndarray  # int64, JPEG bytes
    jpeg_paths: pa.Array  # strings

    def __len__(self) -> int:
        return len(self.labels)

    def shard(self, index: int) -> str:
        return self.shard_names[self.shard_ids[index]]

    def jpeg_path(self, index: int) -> str:
        return self.jpeg_paths[index].as_py()


def read_manifest(root: str | Path, split: str) -> ManifestSplit:
    root = Path(root)
    path = root / layout.MANIFEST
    if not path.is_file():
        raise DtrainError(f"{root} holds no {layout.MANIFEST}; run `dtrain prepare ... --out {root}` first")
    columns = ["split", "index", "label", "width", "height", "bytes", "status", "shard", "offset", "jpeg_path"]
    try:
        table = pq.read_table(path, columns=columns)
    except Exception as exc:  # pyarrow raises several types for a damaged or foreign file
        raise DtrainError(f"cannot read {path}: {exc}; re-run `dtrain prepare`".splitlines()[0]) from None
    keep = pc.and_(pc.equal(table["split"], split), pc.not_equal(table["status"], layout.STATUS_REJECTED))
    table = table.filter(keep).sort_by("index")
    if table.num_rows == 0:
        splits = sorted(set(pq.read_table(path, columns=["split"])["split"].to_pylist()))
        hint = " or prepare with --minival 10000" if split == "minival" else ""
        raise DtrainError(f"{path} has no accepted samples of split {split!r} (it has: {', '.join(splits)}); "
                          f"set data.train_split / data.val_split{hint}")
    index = table["index"].to_numpy()
    if not np.array_equal(index, np.arange(len(index))):
        raise DtrainError(f"{path}: the indices of split {split!r} are not 0..n-1; re-run `dtrain prepare`")
    shards = pc.dictionary_encode(table["shard"].combine_chunks())
    return ManifestSplit(
        root=root, split=split,
        labels=table["label"].to_numpy().astype(np.int64),
        widths=table["width"].to_numpy().astype(np.int64),
        heights=table["height"].to_numpy().astype(np.int64),
        shard_ids=shards.indices.to_numpy(zero_copy_only=False).astype(np.int32),
        shard_names=shards.dictionary.to_pylist(),
        offsets=table["offset"].to_numpy().astype(np.int64),
        sizes=table["bytes"].to_numpy().astype(np.int64),
        jpeg_paths=table["jpeg_path"].combine_chunks(),
    )


def decode_jpeg(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


class ManifestSource:
    """Reads JPEG bytes from the shards by offset (os.pread: no shared file position between
    forked workers) or from the JPEG files, and decodes them with PIL."""

    def __init__(self, manifest: ManifestSplit, source: str = "shards"):
        if source not in SOURCES:
            raise DtrainError(f"data.source={source!r} is not one of {', '.join(SOURCES)}")
        if source == "shards" and "" in manifest.shard_names:
            raise DtrainError(f"split {manifest.split!r} of {manifest.root} has samples without a shard; "
                              "use data.source=files or re-run `dtrain prepare` with the wds format")
        if source == "files" and pc.any(pc.equal(manifest.jpeg_paths, "")).as_py():
            raise DtrainError(f"split {manifest.split!r} of {manifest.root} has samples without a JPEG file; "
                              "use data.source=shards or re-run `dtrain prepare` with JPEG files")
        self.manifest = manifest
        self.source = source
        self._fds: dict[str, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.manifest)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fds"] = {}  # descriptors stay in the process that opened them
        return state

    def label(self, index: int) -> int:
        return int(self.manifest.labels[index])

    def image_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        return self.manifest.widths, self.manifest.heights

    def read_bytes(self, index: int) -> bytes:
        m = self.manifest
        if self.source == "files":
            return (m.root / m.jpeg_path(index)).read_bytes()
        size, offset, shard = int(m.sizes[index]), int(m.offsets[index]), m.shard(index)
        data = os.pread(self._fd(shard), size, offset)
        if len(data) != size:
            raise OSError(f"{m.root / shard} is truncated: wanted {size} bytes at {offset}")
        return data

    def image(self, index: int) -> Image.Image:
        return decode_jpeg(self.read_bytes(index))

    def _fd(self, shard: str) -> int:
        if os.getpid() != self._pid:  # a forked worker must not share the parent's cache
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            if len(self._fds) >= MAX_OPEN_SHARDS:
                os.close(self._fds.pop(next(iter(self._fds))))  # the longest open
            fd = self._fds[shard] = os.open(self.manifest.root / shard, os.O_RDONLY)
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}


class SyntheticSource:
    """Random RGB images of one size and labels, a pure function of (split, index)."""

    def __init__(self, num_samples: int, image_size: int, num_classes: int, split: str):
        if num_samples <= 0 or image_size <= 0 or num_classes <= 0:
            raise DtrainError("data.synthetic_samples, data.synthetic_image_size and num_classes must be positive")
        self.num_samples = num_samples
        self.image_size = image_size
        self.num_classes = num_classes
        self.split_seed = 0 if split == "train" else 1

    def __len__(self) -> int:
        return self.num_samples

    def label(self, index: int) -> int:
        return index % self.num_classes

    def image_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        full = np.full(self.num_samples, self.image_size, dtype=np.int64)
        return full, full

    def image(self, index: int) -> Image.Image:
        rng = np.random.default_rng([SYNTHETIC_SEED, self.split_seed, index])
        pixels = rng.integers(0, 256, size=(self.image_size, self.image_size, 3), dtype=np.uint8)
        return Image.fromarray(pixels, "RGB")
