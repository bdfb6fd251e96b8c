"""What a source hands the pipeline: the ordered candidate samples per split and the class table."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataPrepError
from .samples import Sample


@dataclass(frozen=True)
class ClassInfo:
    index: int
    synset: str
    name: str


@dataclass
class SourcePlan:
    dataset: str                          # "imagenet", "folder", "digits", ...
    classes: list[ClassInfo]
    splits: dict[str, list[Sample]]       # split -> candidates in shard order, position == list index
    source_root: Path | None = None       # linked as OUT/src when samples are files under it
    small_images: bool = False            # FFCV default mode: raw pixels for tiny images
    details: dict = field(default_factory=dict)  # recorded in summary.json["source"]


def classes_from_synsets(synsets, names: dict[str, str] | None = None) -> list[ClassInfo]:
    """Class index = position in the sorted synsets (torchvision's ImageFolder order)."""
    names = names or {}
    return [ClassInfo(i, s, names.get(s, s)) for i, s in enumerate(sorted(set(synsets)))]


# Training shards are written in a seeded random order, not class by class: readers that stream
# tars (DALI's fn.readers.webdataset, webdataset) can only shuffle inside a buffer, so
# class-sorted shards would give them batches of one or two classes. Fixed seed: the same source
# always gives the same shards (resume and verify rely on it).
TRAIN_ORDER_SEED = 2016


def make_samples(split: str, entries, label_of: dict[str, int]) -> list[Sample]:
    """entries: (sort key, synset, Sample fields without split/position/label) in any order.

    Val keeps the sorted order; train is a seeded permutation of it (see TRAIN_ORDER_SEED).
    """
    ordered = sorted(entries, key=lambda entry: entry[0])
    if split == "train":
        random.Random(TRAIN_ORDER_SEED).shuffle(ordered)
    return [
        Sample(split=split, position=i, label=label_of[synset], synset=synset, **fields)
        for i, (_, synset, fields) in enumerate(ordered)
    ]


def require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataPrepError(f"{what} {path} does not exist: check --src")
    if not path.is_dir():
        raise DataPrepError(f"{what} {path} is not a directory: check --src")
    return path
