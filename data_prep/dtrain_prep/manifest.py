"""Stream shard fragments into manifest.parquet and file lists; classes.json and summary.json.

Rows are never all in memory at once: fragments are read one shard at a time, written to Parquet
in record batches, and summarised by running counts (ManifestStats). The parent's memory then
stays flat in the number of images (the counts hold one entry per split/class/shard/reject).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import TextIO

from . import layout
from .plan import ClassInfo

BATCH_ROWS = 8_192  # rows per Parquet row group: ~10 MB of row dicts at most, ~160 groups for ImageNet


def write_atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ManifestStats:
    """Running counts of manifest rows: what summary.json and verify compare."""

    def __init__(self):
        self.splits: dict = {}
        self.per_class: dict = {}
        self.rejects: list[dict] = []
        self.conversions: Counter = Counter()
        self.shards: dict[str, set] = {}

    def add(self, rows) -> ManifestStats:
        for row in rows:
            split = row["split"]
            entry = self.splits.setdefault(split, {"candidates": 0, "accepted": 0, "ok": 0,
                                                   "converted": 0, "rejected": 0, "shards": set()})
            entry["candidates"] += 1
            entry[row["status"]] += 1
            if row["status"] == layout.STATUS_REJECTED:
                self.rejects.append(row)
                continue
            entry["accepted"] += 1
            entry["shards"].add(row["shard"])
            classes = self.per_class.setdefault(split, Counter())
            classes[row["synset"]] += 1
            if row["status"] == layout.STATUS_CONVERTED:
                self.conversions[row["reason"]] += 1
        return self

    def split_counts(self) -> dict:
        return {s: {**e, "shards": len(e["shards"])} for s, e in self.splits.items()}

    def shard_names(self, split: str) -> list[str]:
        return sorted(self.splits.get(split, {}).get("shards", ()))

    def per_class_counts(self) -> dict:
        return {split: dict(sorted(c.items())) for split, c in self.per_class.items()}


def split_counts(rows) -> dict:
    return ManifestStats().add(rows).split_counts()


class ManifestWriter:
    """Rows in reading order -> indices, manifest.parquet (record batches), file lists, stats."""

    def __init__(self, out: Path, filelist_splits=()):
        import pyarrow.parquet as pq

        self.out, self.stats = out, ManifestStats()
        self.batch: list[dict] = []
        self.next_index: Counter = Counter()
        self.tmp = out / (layout.MANIFEST + ".tmp")
        self.parquet = pq.ParquetWriter(self.tmp, layout.manifest_schema())
        self.filelists: dict[str, tuple[Path, TextIO]] = {}
        self._open_files = contextlib.ExitStack()  # the file lists stay open until close()
        for split in filelist_splits:
            path = out / layout.filelist_name(split)
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = self._open_files.enter_context(open(path.with_name(path.name + ".tmp"), "w"))  # noqa: SIM115
            self.filelists[split] = (path, handle)

    def add(self, rows: list[dict]) -> None:
        """rows of one shard, in order: index = rank among the accepted rows of the split."""
        for row in rows:
            if row["status"] != layout.STATUS_REJECTED:
                row["index"] = self.next_index[row["split"]]
                self.next_index[row["split"]] += 1
                if row["jpeg_path"] and row["split"] in self.filelists:
                    self.filelists[row["split"]][1].write(f"{row['jpeg_path']} {row['label']}\n")
        self.stats.add(rows)
        self.batch.extend({c: row[c] for c in layout.MANIFEST_COLUMNS} for row in rows)
        if len(self.batch) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.batch:
            self.parquet.write_table(pa.Table.from_pylist(self.batch, schema=layout.manifest_schema()))
            self.batch = []

    def close(self) -> ManifestStats:
        self._flush()
        self.parquet.close()
        os.replace(self.tmp, self.out / layout.MANIFEST)
        for _, handle in self.filelists.values():
            handle.flush()
            os.fsync(handle.fileno())
        self._open_files.close()
        for path, _ in self.filelists.values():
            os.replace(path.with_name(path.name + ".tmp"), path)
        return self.stats


def read_manifest(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(Path(out) / layout.MANIFEST).to_pylist()


def write_classes(out: Path, classes: list[ClassInfo]) -> None:
    table = [{"index": c.index, "synset": c.synset, "name": c.name.split(",")[0].strip(), "words": c.name}
             for c in classes]
    write_atomic_text(out / layout.CLASSES, json.dumps(table, indent=1) + "\n")


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


def build_summary(out: Path, dataset: str, stats: ManifestStats, outputs: dict, options: dict, source: dict,
                  timing: dict, duplicates: dict) -> dict:
    return {
        "dataset": dataset,
        "splits": stats.split_counts(),
        "per_class": stats.per_class_counts(),
        "rejects": [_reject_entry(out, r) for r in stats.rejects],
        "duplicates": duplicates,  # identical accepted images (dtrain_prep.duplicates)
        "conversions": dict(sorted(stats.conversions.items())),
        "outputs": outputs,
        "options": options,
        "source": source,
        "tool_versions": tool_versions(),
        "timing": timing,
        "complete": True,  # last key, and summary.json is the last file written: presence = finished
    }
