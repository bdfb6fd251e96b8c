"""`dtrain prepare verify OUT`: re-read every output and check counts and checksums.

Checks, in order: summary.json is complete; manifest counts equal the summary's; every byte of
every shard (each accepted row's tar headers, JPEG with its sha256, .cls and .lbl labels, padding,
end-of-archive blocks); every line of each shard's wds2idx index (the offsets and sizes DALI seeks
by); file lists name existing files whose bytes match; each .beton holds as many samples (and the
same labels) as the manifest, and every sample's stored image bytes hash to the sha256 recorded
when the .beton was written.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from collections import defaultdict
from itertools import zip_longest
from pathlib import Path

import numpy as np

from . import layout
from .errors import VerifyError
from .ffcv_export import stored_digests
from .manifest import read_manifest, split_counts
from .shard_writer import SAMPLE_MEMBERS, end_of_archive_size, index_text, label_payloads, member_header, padded_size


def _fail(message: str):
    raise VerifyError(f"verify failed: {message}")


def _check_summary(out: Path, rows: list[dict]) -> dict:
    summary_path = out / layout.SUMMARY
    if not summary_path.exists():
        _fail(f"{summary_path} is missing: the prepare run did not finish (re-run it to resume)")
    summary = json.loads(summary_path.read_text())
    if summary.get("complete") is not True:
        _fail(f"{summary_path} is not marked complete")
    if split_counts(rows) != summary["splits"]:
        _fail(f"manifest counts {split_counts(rows)} differ from summary.json {summary['splits']}")
    return summary


def _check_member(handle, shard: str, row: dict, ext: str, payloads: dict, key: str | None) -> tuple:
    """The member at the read position: its whole header as prepare writes it, its payload, its
    zero padding. Returns (extension, payload offset, size, name) as the index lists it."""
    at = handle.tell()
    block = handle.read(tarfile.BLOCKSIZE)
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
    member_key, _, member_ext = name.partition(".")
    if member_ext != ext or not member_key.isdigit() or member_key != (key or member_key):
        _fail(f"{shard} at byte {at}: expected the .{ext} member of {row['source']}, found {name!r}")
    size = len(payloads[ext]) if ext in payloads else row["bytes"]
    if block != member_header(name, size):
        _fail(f"{shard}: the tar header of {name} at byte {at} differs from what prepare wrote (corrupt header)")
    data = handle.read(padded_size(size))
    if ext == layout.EXT_JPEG:
        if at + tarfile.BLOCKSIZE != row["offset"]:
            _fail(f"{shard}: {name} is at byte {at + tarfile.BLOCKSIZE}, the manifest says {row['offset']}")
        if hashlib.sha256(data[:size]).hexdigest() != row["sha256"]:
            _fail(f"{shard}: checksum of {name} ({row['source']}) differs from the manifest")
    elif data[:size] != payloads[ext]:
        _fail(f"{shard}: {name} holds {data[:size]!r}, the manifest gives {row['source']} label {row['label']}")
    if data[size:].count(0) != len(data) - size:
        _fail(f"{shard}: the padding after {name} is not zeros")
    return ext, at + tarfile.BLOCKSIZE, size, name


def _check_shard(out: Path, shard: str, rows: list[dict]) -> None:
    """Every byte of the shard, in order: each accepted row's .cls, .jpg and .lbl members (headers,
    payloads, padding), then the end-of-archive blocks; then its index, line by line."""
    path = out / shard
    if not path.exists():
        _fail(f"shard {shard} is missing")
    members = []
    with open(path, "rb") as handle:
        for row in sorted(rows, key=lambda r: r["offset"]):
            payloads, key = label_payloads(row["label"]), None
            for ext in SAMPLE_MEMBERS:
                members.append(_check_member(handle, shard, row, ext, payloads, key))
                key = members[-1][3].partition(".")[0]
        end = handle.tell()
        if handle.read() != bytes(end_of_archive_size(end)):
            _fail(f"{shard}: the bytes after its last sample (from byte {end}) are not the tar's end-of-archive "
                  "blocks (corrupt or extra data)")
    _check_index(out, shard, members)


def _check_index(out: Path, shard: str, members: list[tuple]) -> None:
    """The wds2idx index DALI seeks by: every line must list the offsets and sizes of the shard."""
    index_path = out / layout.index_name(shard)
    if not index_path.exists():
        _fail(f"index {layout.index_name(shard)} of {shard} is missing")
    found = index_path.read_text(errors="backslashreplace").splitlines()
    expected = index_text(members).splitlines()
    for number, (line, want) in enumerate(zip_longest(found, expected, fillvalue=""), start=1):
        if line != want:
            _fail(f"{layout.index_name(shard)} line {number} is {line[:80]!r}, {shard} holds {want[:80]!r}")


def _check_filelist(out: Path, split: str, rows: list[dict]) -> None:
    path = out / layout.filelist_name(split)
    if not path.exists():
        _fail(f"{path} is missing")
    lines = [line.rsplit(" ", 1) for line in path.read_text().splitlines() if line]
    expected = [(r["jpeg_path"], str(r["label"]), r["sha256"]) for r in rows]
    if len(lines) != len(expected):
        _fail(f"{path.name} has {len(lines)} lines, the manifest {len(expected)} accepted {split} images")
    for (jpeg, label), (want_jpeg, want_label, sha) in zip(lines, expected, strict=True):
        if (jpeg, label) != (want_jpeg, want_label):
            _fail(f"{path.name}: line {jpeg} {label} differs from the manifest ({want_jpeg} {want_label})")
        file = out / jpeg
        if not file.exists():
            _fail(f"{path.name} names {jpeg}, which does not exist (is --src still mounted at OUT/src?)")
        if hashlib.sha256(file.read_bytes()).hexdigest() != sha:
            _fail(f"{jpeg} differs from the image stored in the shards (checksum)")


def _check_beton(out: Path, split: str, rows: list[dict]) -> None:
    from ffcv.reader import Reader

    path = out / layout.ffcv_name(split)
    if not path.exists():
        _fail(f"{path} is missing")
    reader = Reader(str(path))
    if reader.num_samples != len(rows):
        _fail(f"{path.name} holds {reader.num_samples} samples, the manifest {len(rows)}")
    labels = [int(v) for v in reader.metadata["f1"]]
    if labels != [r["label"] for r in rows]:
        _fail(f"{path.name}: labels differ from the manifest")
    digest_path = out / layout.ffcv_digest_name(split)
    if not digest_path.exists():
        _fail(f"{digest_path} is missing: re-run prepare with --overwrite to record the .beton's checksums")
    recorded = np.frombuffer(digest_path.read_bytes(), dtype="<u1").reshape(-1, 32)
    stored = stored_digests(path)
    if recorded.shape != stored.shape:
        _fail(f"{digest_path.name} holds {len(recorded)} checksums, {path.name} {len(stored)} samples")
    differ = np.flatnonzero((recorded != stored).any(axis=1))
    if len(differ):
        _fail(f"{path.name}: the stored image of sample {differ[0]} ({rows[differ[0]]['source']}) differs from "
              f"what was written (checksum; {len(differ)} samples differ)")


def verify_output(out: Path, show_progress: bool = True) -> str:
    if not (out / layout.MANIFEST).exists():
        _fail(f"{out} holds no {layout.MANIFEST}: is it a dtrain prepare output?")
    rows = read_manifest(out)
    summary = _check_summary(out, rows)
    accepted = defaultdict(list)
    for row in rows:
        if row["status"] != layout.STATUS_REJECTED:
            accepted[row["split"]].append(row)
    by_shard = defaultdict(list)
    for split_rows in accepted.values():
        for row in split_rows:
            by_shard[row["shard"]].append(row)
    from tqdm import tqdm

    for shard, shard_rows in tqdm(sorted(by_shard.items()), desc="verify shards", unit="shard",
                                  disable=not (show_progress and sys.stderr.isatty())):
        _check_shard(out, shard, shard_rows)
    outputs = summary.get("outputs", {})
    for split in outputs.get("filelists", {}):
        _check_filelist(out, split, accepted[split])
    ffcv = outputs.get("ffcv", {})
    for split in ffcv if isinstance(ffcv, dict) else ():
        _check_beton(out, split, accepted[split])
    counts = ", ".join(f"{s}: {len(r)}" for s, r in sorted(accepted.items()))
    checked = ["shards", "indexes"] + (["filelists"] if outputs.get("filelists") else []) + \
        (["ffcv"] if isinstance(ffcv, dict) and ffcv else [])
    return f"OK {out}: {counts} images; checked manifest, {', '.join(checked)}"
