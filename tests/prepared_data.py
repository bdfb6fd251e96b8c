"""A tiny prepared dataset in exactly the layout `dtrain prepare` writes (dtrain_prep.layout):
manifest.parquet + webdataset shards whose JPEG offsets are recorded + JPEG files.

Stands in for `dtrain prepare digits --out DIR` so the loader tests need neither the data_prep
pipeline nor a dataset download. Images have varied sizes (as ImageNet's do) and one rejected
row per split, which readers must skip.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from dtrain_prep import layout


def _jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    # Smooth gradients plus noise: JPEG keeps them close, so decoded pixels are meaningful.
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     np.full_like(x, rng.integers(0, 256))], axis=-1)
    noise = rng.integers(-20, 21, size=base.shape)
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return tar.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def write_prepared(out: str | Path, counts: dict[str, int] | None = None, num_classes: int = 3,
                   sizes: list[tuple[int, int]] | None = None, per_shard: int = 5, seed: int = 0) -> Path:
    """Write `counts[split]` accepted samples per split (default train 24, val 7) under `out`."""
    out = Path(out)
    counts = counts or {"train": 24, "val": 7}
    sizes = sizes or [(40, 30), (30, 40), (36, 36), (48, 32)]
    rng = np.random.default_rng(seed)
    rows = []
    for split, count in counts.items():
        (out / layout.JPEG_DIR / split).mkdir(parents=True, exist_ok=True)
        (out / layout.WDS_DIR / split).mkdir(parents=True, exist_ok=True)
        rows.append(dict(split=split, index=-1, source=f"{split}/broken.jpg", label=-1, synset="", width=0,
                         height=0, bytes=0, sha256="", status=layout.STATUS_REJECTED, reason="not an image",
                         shard="", offset=-1, jpeg_path=""))
        for first in range(0, count, per_shard):
            shard = layout.shard_name(split, first // per_shard)
            with tarfile.open(out / shard, "w", format=tarfile.GNU_FORMAT) as tar:
                for index in range(first, min(first + per_shard, count)):
                    key, label = layout.sample_key(index), int(rng.integers(0, num_classes))
                    width, height = sizes[index % len(sizes)]
                    data = _jpeg(rng, width, height)
                    _add(tar, f"{key}.{layout.EXT_CLS}", str(label).encode())
                    offset = _add(tar, f"{key}.{layout.EXT_JPEG}", data)
                    _add(tar, f"{key}.{layout.EXT_LBL}", label.to_bytes(4, "little", signed=True))
                    jpeg_path = f"{layout.JPEG_DIR}/{split}/{key}.jpg"
                    (out / jpeg_path).write_bytes(data)
                    rows.append(dict(split=split, index=index, source=f"{split}/{key}.png", label=label,
                                     synset=f"c{label}", width=width, height=height, bytes=len(data),
                                     sha256="", status=layout.STATUS_OK, reason="", shard=shard,
                                     offset=offset, jpeg_path=jpeg_path))
    rows.reverse()  # readers must order by `index`, not by row position
    table = pa.Table.from_pylist(rows, schema=layout.manifest_schema())
    pq.write_table(table, out / layout.MANIFEST)
    return out
