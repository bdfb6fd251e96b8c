"""A held-out "minival" split carved from train by `dtrain prepare --minival N`.

R1 lowers the ImageNet lr when the validation error plateaus; deciding that on the split that is
then reported lets the test set tune the schedule. `--minival 10000` moves a seeded random 10k of
the accepted training images into split "minival" (the manifest's split column; the images stay
in their train shards), so a recipe can validate on minival (data.val_split=minival) and report
on val. The torch loader reads it by the manifest; FFCV .beton files and DALI's webdataset reader
see whole shards, so minival images stay inside DALI's train stream (documented in the README).
"""

from __future__ import annotations

import numpy as np

from . import layout
from .errors import DataPrepError

MINIVAL = "minival"


def _accepted(row: dict, source: str) -> bool:
    return row["split"] == source and row["status"] != layout.STATUS_REJECTED


class MinivalCarver:
    """Moves the seeded choice of `count` accepted `source` rows to split minival, one shard's
    rows at a time (prepare streams the manifest, so the rows are never all in memory): the
    choice needs only how many accepted rows there are, counted in a first pass."""

    def __init__(self, count: int, accepted_total: int, seed: int = 0, source: str = "train"):
        if count > 0 and count >= accepted_total:
            raise DataPrepError(f"--minival {count} would take all {accepted_total} training images; choose fewer")
        chosen = np.random.default_rng(seed).permutation(accepted_total)[:count].tolist() if count > 0 else []
        self.chosen = set(chosen)
        self.source, self.seen = source, 0

    def apply(self, rows: list[dict]) -> list[dict]:
        """Call on the rows in reading order, before indices are assigned."""
        if not self.chosen:
            return rows
        for row in rows:
            if _accepted(row, self.source):
                if self.seen in self.chosen:
                    row["split"] = MINIVAL
                self.seen += 1
        return rows


def carve_minival(rows: list[dict], count: int, seed: int = 0, source: str = "train") -> list[dict]:
    """The same choice over rows held in memory (what MinivalCarver does shard by shard)."""
    if count <= 0:
        return rows
    total = sum(1 for r in rows if _accepted(r, source))
    return MinivalCarver(count, total, seed, source).apply(rows)
