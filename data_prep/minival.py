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

MINIVAL = "minival"


def carve_minival(rows: list[dict], count: int, seed: int = 0, source: str = "train") -> list[dict]:
    """Move `count` accepted rows of `source`, chosen by a seeded permutation, to split minival.
    Call before indices are assigned; rows keep their reading order."""
    if count <= 0:
        return rows
    accepted = [i for i, r in enumerate(rows) if r["split"] == source and r["status"] != layout.STATUS_REJECTED]
    if count >= len(accepted):
        from .errors import DataPrepError

        raise DataPrepError(f"--minival {count} would take all {len(accepted)} training images; choose fewer")
    chosen = np.random.default_rng(seed).permutation(len(accepted))[:count]
    for position in chosen:
        rows[accepted[position]]["split"] = MINIVAL
    return rows
