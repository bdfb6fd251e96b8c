"""Identical stored images (same sha256): counted, and marked in the manifest's duplicate_of column.

ImageNet's training set holds exact duplicates, some under two classes, and some validation images
are also training images. The first occurrence in reading order (train shards, then val, each in
shard order) is the original; every later one gets duplicate_of = the original's source. All are
kept in the outputs: R1 (Sec. 4.1) trains on all 1.28M training images and reports on the 50k
validation images, so dropping them would change the data its results are compared against; the
manifest and summary.json say which they are.

Two passes over the shard fragments keep the parent's memory small: the first collects an 8-byte
prefix of each digest (8 bytes an image) and finds the prefixes seen more than once; the second,
while the manifest is written, remembers full digests only for those.
"""

from __future__ import annotations

import numpy as np

from . import layout

EXAMPLES = 20  # duplicates listed by name in summary.json


def _accepted(row: dict) -> bool:
    return row["status"] != layout.STATUS_REJECTED


def _prefix(row: dict) -> int:
    return int(row["sha256"][:16], 16)


class DigestPrefixes:
    """First pass: the digest prefixes of the accepted rows, shard by shard."""

    def __init__(self):
        self.parts: list[np.ndarray] = []

    def add(self, rows: list[dict]) -> None:
        self.parts.append(np.array([_prefix(r) for r in rows if _accepted(r)], dtype=np.uint64))

    def repeated(self) -> set[int]:
        prefixes = np.concatenate(self.parts) if self.parts else np.zeros(0, np.uint64)
        values, counts = np.unique(prefixes, return_counts=True)
        return {int(v) for v in values[counts > 1]}


class DuplicateMarker:
    """Second pass: sets every row's duplicate_of ("" for an original) and counts the duplicates."""

    def __init__(self, repeated: set[int]):
        self.repeated = repeated
        self.originals: dict[str, tuple] = {}  # full digest -> (source, synset, split) of its first row
        #                                        (only for the repeated prefixes)
        self.count = self.other_class = self.other_split = 0
        self.examples: list[dict] = []

    def mark(self, rows: list[dict]) -> list[dict]:
        for row in rows:
            row["duplicate_of"] = ""
            if not _accepted(row) or _prefix(row) not in self.repeated:
                continue
            original = self.originals.get(row["sha256"])
            if original is None:
                self.originals[row["sha256"]] = (row["source"], row["synset"], row["split"])
            else:
                self._count(row, *original)
        return rows

    def _count(self, row: dict, source: str, synset: str, split: str) -> None:
        row["duplicate_of"] = source
        self.count += 1
        self.other_class += row["synset"] != synset
        self.other_split += row["split"] != split
        if len(self.examples) < EXAMPLES:
            self.examples.append({"split": row["split"], "source": row["source"], "synset": row["synset"],
                                  "duplicate_of": source, "its_synset": synset})

    def summary(self) -> dict:
        return {"images": self.count, "other_class": self.other_class, "other_split": self.other_split,
                "kept": True, "examples": self.examples}
