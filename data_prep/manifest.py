"""Merge shard fragments into manifest.parquet; write file lists, classes.json and summary.json."""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from importlib import metadata
from pathlib import Path

from . import layout
from .plan import ClassInfo


def assign_indices(rows: list[dict]) -> list[dict]:
    """rows in reading order (split, shard, position): index = rank among the accepted rows."""
    next_index: Counter = Counter()
    for row in rows:
        if row["status"] != layout.STATUS_REJECTED:
            row["index"] = next_index[row["split"]]
            next_index[row["split"]] += 1
    return rows


def write_atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_manifest(out: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = layout.manifest_schema()
    table = pa.Table.from_pylist([{c: row[c] for c in layout.MANIFEST_COLUMNS} for row in rows], schema=schema)
    tmp = out / (layout.MANIFEST + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out / layout.MANIFEST)


def read_manifest(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(Path(out) / layout.MANIFEST).to_pylist()


def write_filelist(out: Path, split: str, rows: list[dict]) -> None:
    lines = [f"{row['jpeg_path']} {row['label']}\n" for row in rows if row["jpeg_path"]]
    write_atomic_text(out / layout.filelist_name(split), "".join(lines))


def write_classes(out: Path, classes: list[ClassInfo]) -> None:
    table = [{"index": c.index, "synset": c.synset, "name": c.name.split(",")[0].strip(), "words": c.name}
             for c in classes]
    write_atomic_text(out / layout.CLASSES, json.dumps(table, indent=1) + "\n")


def split_counts(rows: list[dict]) -> dict:
    counts: dict = {}
    for row in rows:
        entry = counts.setdefault(row["split"], {"candidates": 0, "accepted": 0, "ok": 0,
                                                  "converted": 0, "rejected": 0, "shards": set()})
        entry["candidates"] += 1
        entry[row["status"]] += 1
        if row["status"] != layout.STATUS_REJECTED:
            entry["accepted"] += 1
            entry["shards"].add(row["shard"])
    for entry in counts.values():
        entry["shards"] = len(entry["shards"])
    return counts


def per_class_counts(rows: list[dict]) -> dict:
    counts: dict = {}
    for row in rows:
        if row["status"] != layout.STATUS_REJECTED:
            split = counts.setdefault(row["split"], {})
            split[row["synset"]] = split.get(row["synset"], 0) + 1
    return {split: dict(sorted(c.items())) for split, c in counts.items()}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def tool_versions() -> dict:
    packages = ("pillow", "numpy", "pyarrow", "nvidia-dali-cuda120", "nvidia-dali-cuda130", "ffcv", "dtrain")
    versions = {"python": platform.python_version()}
    versions.update({p: _version(p) for p in packages if _version(p)})
    return versions


def _reject_entry(out: Path, row: dict) -> dict:
    quarantined = f"{layout.QUARANTINE_DIR}/{row['split']}/{layout.sample_key(row['position'])}.bin"
    return {"split": row["split"], "source": row["source"], "synset": row["synset"], "reason": row["reason"],
            "quarantine": quarantined if (out / quarantined).exists() else ""}


def build_summary(out: Path, dataset: str, rows: list[dict], outputs: dict, options: dict, source: dict,
                  timing: dict) -> dict:
    rejects = [_reject_entry(out, r) for r in rows if r["status"] == layout.STATUS_REJECTED]
    conversions = Counter(r["reason"] for r in rows if r["status"] == layout.STATUS_CONVERTED)
    return {
        "dataset": dataset,
        "splits": split_counts(rows),
        "per_class": per_class_counts(rows),
        "rejects": rejects,
        "conversions": dict(sorted(conversions.items())),
        "outputs": outputs,
        "options": options,
        "source": source,
        "tool_versions": tool_versions(),
        "timing": timing,
        "complete": True,  # last key, and summary.json is the last file written: presence = finished
    }
