"""`dtrain prepare verify OUT`: re-read every output and check counts and checksums.

Checks, in order: summary.json is complete; manifest counts equal the summary's; every accepted
row's JPEG sits in its shard at its offset under its tar header with its sha256, next to its
label members; every shard has its wds2idx index listing its samples; file lists name existing
files whose bytes match; each .beton holds as many samples (and the same labels) as the manifest, and
every sample's stored image bytes hash to the sha256 recorded when the .beton was written.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import layout
from .errors import VerifyError
from .ffcv_export import stored_digests
from .manifest import read_manifest, split_counts


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


def _check_shard(out: Path, shard: str, rows: list[dict]) -> None:
    path = out / shard
    if not path.exists():
        _fail(f"shard {shard} is missing")
    with open(path, "rb") as handle:
        for row in rows:
            handle.seek(row["offset"] - tarfile.BLOCKSIZE)
            header = tarfile.TarInfo.frombuf(handle.read(tarfile.BLOCKSIZE), "utf-8", "surrogateescape")
            if not header.name.endswith("." + layout.EXT_JPEG) or header.size != row["bytes"]:
                _fail(f"{shard} at offset {row['offset']}: tar header {header.name!r} does not match {row['source']}")
            data = handle.read(row["bytes"])
            if hashlib.sha256(data).hexdigest() != row["sha256"]:
                _fail(f"{shard}: checksum of {header.name} ({row['source']}) differs from the manifest")
            key = header.name.split(".", 1)[0]
            padded = -(-row["bytes"] // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            handle.seek(row["offset"] + padded)
            lbl_header = tarfile.TarInfo.frombuf(handle.read(tarfile.BLOCKSIZE), "utf-8", "surrogateescape")
            label = int.from_bytes(handle.read(4), "little", signed=True)
            if lbl_header.name != f"{key}.{layout.EXT_LBL}" or label != row["label"]:
                _fail(f"{shard}: label member of {key} is {label}, the manifest says {row['label']}")
    index_path = out / layout.index_name(shard)
    if not index_path.exists():
        _fail(f"index {index_path.name} of {shard} is missing")
    declared = index_path.read_text().split("\n", 1)[0].split()
    if len(declared) != 2 or int(declared[1]) != len(rows):
        _fail(f"{index_path.name} lists {declared[1:]} samples, {shard} holds {len(rows)}")


def _check_filelist(out: Path, split: str, rows: list[dict]) -> None:
    path = out / layout.filelist_name(split)
    if not path.exists():
        _fail(f"{path} is missing")
    lines = [line.rsplit(" ", 1) for line in path.read_text().splitlines() if line]
    expected = [(r["jpeg_path"], str(r["label"]), r["sha256"]) for r in rows]
    if len(lines) != len(expected):
        _fail(f"{path.name} has {len(lines)} lines, the manifest {len(expected)} accepted {split} images")
    for (jpeg, label), (want_jpeg, want_label, sha) in zip(lines, expected):
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
    checked = ["shards"] + (["filelists"] if outputs.get("filelists") else []) + (["ffcv"] if isinstance(ffcv, dict) else [])
    return f"OK {out}: {counts} images; checked manifest, {', '.join(checked)}"
