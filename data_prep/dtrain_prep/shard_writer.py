"""Process one shard in a worker: normalise its images, write the webdataset tar atomically.

A shard is done when its manifest fragment exists: the fragment is renamed into place last, after
the tar and its index, so a run killed at any point redoes at most the shards in flight, and
redoing a shard writes the same bytes (fixed tar headers, deterministic JPEG encoding).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from . import layout
from .errors import DataPrepError
from .images import ImageOptions, StoredImage, normalize
from .pixel_stats import STATS_SPLIT, PixelSums, decode_rgb
from .samples import Sample, UnusableSource, read_payload


@dataclass(frozen=True)
class ShardTask:
    split: str
    shard_index: int
    samples: tuple[Sample, ...]
    out: str
    image_options: ImageOptions
    jpeg_files: bool        # give every accepted sample a JPEG file for fn.readers.file
    link_originals: bool    # clean originals are reachable as OUT/src/<relpath> (no copy)


def fragment_path(out: str | Path, split: str, shard_index: int) -> Path:
    return Path(out) / layout.WORK_DIR / "fragments" / f"{split}-{shard_index:06d}.json"


def pixel_sums_path(out: str | Path, split: str, shard_index: int) -> Path:
    """The shard's pixel sums (dtrain_prep.pixel_stats), written before its fragment."""
    return fragment_path(out, split, shard_index).with_suffix(".pixels.npz")


def _add_pixels(sums: PixelSums | None, stored: StoredImage) -> None:
    if sums is None or sums.mixed_sizes:
        return
    sums.add(np.asarray(stored.decoded) if stored.decoded is not None else decode_rgb(stored.data))


# Shards are written member by member with fixed metadata (reproducible bytes: a redone shard is
# the same file), the bytes tarfile would write; verify rebuilds every header and compares it.
TAR_FORMAT: Final = tarfile.GNU_FORMAT


def member_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    return info.tobuf(TAR_FORMAT, "utf-8", "surrogateescape")


def padded_size(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def end_of_archive_size(offset: int) -> int:
    """Zero bytes tarfile writes when it closes an archive at `offset`: two zero blocks, then up to
    a whole record."""
    return -(-(offset + 2 * tarfile.BLOCKSIZE) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE - offset


def label_payloads(label: int) -> dict[str, bytes]:
    """The label members of a sample: ASCII decimal (.cls, webdataset's convention) and 4-byte
    little-endian int32 (.lbl, what DALI decodes with dtypes=INT32)."""
    return {layout.EXT_CLS: str(label).encode(), layout.EXT_LBL: label.to_bytes(4, "little", signed=True)}


# A sample's members in shard order.
SAMPLE_MEMBERS = (layout.EXT_CLS, layout.EXT_JPEG, layout.EXT_LBL)


def _tar_member(handle, name: str, data: bytes) -> int:
    """Append a member (its header, data and zero padding); return its payload offset."""
    handle.write(member_header(name, len(data)))
    offset = handle.tell()
    handle.write(data)
    handle.write(bytes(padded_size(len(data)) - len(data)))
    return offset


def _write_sample(handle, key: str, label: int, jpeg: bytes) -> int:
    """The sample's members in SAMPLE_MEMBERS order; returns the JPEG's payload offset."""
    payloads = {**label_payloads(label), layout.EXT_JPEG: jpeg}
    offsets = {ext: _tar_member(handle, f"{key}.{ext}", payloads[ext]) for ext in SAMPLE_MEMBERS}
    return offsets[layout.EXT_JPEG]


def tmp_name(path: Path) -> Path:
    """A per-process temporary name: a worker orphaned by a killed run cannot clash with a new run."""
    return path.with_name(f"{path.name}.tmp.{os.getpid()}")


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_wds_index(tar_path: Path) -> None:
    """DALI's own indexer (the `wds2idx` module that nvidia-dali installs) when it is there.

    Without DALI we write the same v1.2 text format ourselves; it lists, per sample, each
    member's extension, payload offset, size and name.
    """
    idx_path = Path(layout.index_name(str(tar_path)))
    tmp = tmp_name(idx_path)
    try:
        from wds2idx import IndexCreator
    except ImportError:
        IndexCreator = None
    if IndexCreator is not None:
        with IndexCreator(str(tar_path), str(tmp), verbose=False) as creator:
            creator.create_index()
    else:
        with tarfile.open(tar_path) as tar:
            members = [(m.name.split(".", 1)[1], m.offset_data, m.size, m.name) for m in tar if m.isreg()]
        tmp.write_text(index_text(members))
    os.replace(tmp, idx_path)


def index_text(members) -> str:
    """wds2idx's v1.2 text for members (extension, payload offset, size, name) in tar order: one
    line per sample (consecutive members that share a key)."""
    samples: dict[str, list[str]] = {}
    for ext, offset, size, name in members:
        samples.setdefault(name.split(".", 1)[0], []).append(f"{ext} {offset} {size} {name}")
    return f"v1.2 {len(samples)}\n" + "".join(" ".join(parts) + "\n" for parts in samples.values())


def _row(sample: Sample, stored: StoredImage, **where) -> dict:
    accepted = stored.status != layout.STATUS_REJECTED
    row = {
        "split": sample.split, "index": -1, "source": sample.source,
        "label": sample.label if accepted else -1, "synset": sample.synset,
        "width": stored.width, "height": stored.height, "bytes": len(stored.data),
        "sha256": hashlib.sha256(stored.data).hexdigest() if accepted else "",
        "status": stored.status, "reason": stored.reason,
        "shard": "", "offset": -1, "jpeg_path": "", "position": sample.position,
    }
    row.update(where)
    return row


def _jpeg_file(task: ShardTask, sample: Sample, stored: StoredImage, key: str) -> str:
    if not task.jpeg_files:
        return ""
    if (task.link_originals and sample.relpath and stored.status == layout.STATUS_OK
            and not any(c.isspace() for c in sample.relpath)):
        return f"{layout.SOURCE_LINK}/{sample.relpath}"
    relative = f"{layout.JPEG_DIR}/{sample.split}/{key}.jpg"
    _write_atomic(Path(task.out) / relative, stored.data)
    return relative


def _quarantine(task: ShardTask, sample: Sample, payload, key: str) -> None:
    if isinstance(payload, bytes):
        _write_atomic(Path(task.out) / layout.QUARANTINE_DIR / sample.split / f"{key}.bin", payload)


def _load(sample: Sample):
    try:
        return read_payload(sample), None
    except UnusableSource as exc:
        return exc.data, str(exc)  # its bytes, when readable, go to quarantine
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"


def process_shard(task: ShardTask) -> list[dict]:
    """Write shard `task.shard_index` of `task.split`; return its manifest rows (in order)."""
    shard = layout.shard_name(task.split, task.shard_index)
    final = Path(task.out) / shard
    tmp = tmp_name(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    sums = PixelSums() if task.split == STATS_SPLIT else None
    try:
        with open(tmp, "wb") as handle:
            for sample in task.samples:
                key = layout.sample_key(sample.position)
                payload, read_error = _load(sample)
                if read_error:
                    _quarantine(task, sample, payload, key)
                    rows.append(_row(sample, StoredImage(layout.STATUS_REJECTED, read_error)))
                    continue
                stored = normalize(payload, task.image_options)
                if stored.status == layout.STATUS_REJECTED:
                    _quarantine(task, sample, payload, key)
                    rows.append(_row(sample, stored))
                    continue
                offset = _write_sample(handle, key, sample.label, stored.data)
                rows.append(_row(sample, stored, shard=shard, offset=offset,
                                 jpeg_path=_jpeg_file(task, sample, stored, key)))
                _add_pixels(sums, stored)
            handle.write(bytes(end_of_archive_size(handle.tell())))
            handle.flush()
            os.fsync(handle.fileno())
        if any(row["shard"] for row in rows):
            os.replace(tmp, final)
            write_wds_index(final)
        else:  # every image of the shard was rejected: an empty tar would break DALI's reader
            tmp.unlink()
        if sums is not None:
            _write_atomic(pixel_sums_path(task.out, task.split, task.shard_index), sums.to_bytes())
        _write_atomic(fragment_path(task.out, task.split, task.shard_index), json.dumps(rows).encode())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DataPrepError(f"disk full while writing {final}: free space or choose another --out, "
                                "then re-run the same command to resume") from None
        raise DataPrepError(f"cannot write {final}: {exc.strerror or exc}") from None
    return rows


def load_fragment(out: str | Path, split: str, shard_index: int) -> list[dict] | None:
    path = fragment_path(out, split, shard_index)
    if not path.exists():
        return None
    return json.loads(path.read_text())
