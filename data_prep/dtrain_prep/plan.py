"""What a source hands the pipeline: the ordered candidate samples per split and the class table."""

from __future__ import annotations

import os
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
    warnings: list[str] = field(default_factory=list)  # shown to the user, recorded in summary.json


def classes_from_synsets(synsets, names: dict[str, str] | None = None) -> list[ClassInfo]:
    """Class index = position in the sorted synsets (torchvision's ImageFolder order)."""
    names = names or {}
    return [ClassInfo(i, s, names.get(s, s)) for i, s in enumerate(sorted(set(synsets)))]


def read_classes_file(path: Path) -> list[tuple[str, str]]:
    """--classes FILE: one class per line, "synset [words]" (LOC_synset_mapping.txt works as is)."""
    if not path.is_file():
        raise DataPrepError(f"--classes {path} is not a file: give a text file with one class (synset) per line")
    pinned = []
    for line in path.read_text().splitlines():
        synset, _, words = line.strip().partition(" ")
        if synset:
            pinned.append((synset, words.strip() or synset))
    duplicates = sorted({s for s, _ in pinned if [p for p, _ in pinned].count(s) > 1})
    if not pinned or duplicates:
        raise DataPrepError(f"--classes {path} " + (f"lists {duplicates[0]} twice" if duplicates else "is empty")
                            + ": give each class once, one per line")
    return pinned


def class_table(folders, entries, classes_file: Path | None = None,
                names: dict[str, str] | None = None) -> tuple[list[ClassInfo], list[str]]:
    """Classes and warnings. Every class folder keeps its sorted position as its label, even an empty
    one (dropping it would shift every later label); --classes pins the list and its order."""
    names = names or {}
    found = {e[1] for e in entries if e[1] and e[2]["kind"] != "unusable"}
    folders = sorted(set(folders) | found)
    if classes_file is None:
        classes = classes_from_synsets(folders, names)
    else:
        pinned = read_classes_file(Path(classes_file))
        listed = {s for s, _ in pinned}
        unlisted = [f for f in folders if f not in listed]
        if unlisted:
            raise DataPrepError(f"class folder {unlisted[0]!r} is not in --classes {classes_file} "
                                f"({len(unlisted)} such): add it there, or remove the folder")
        classes = [ClassInfo(i, s, names.get(s, words)) for i, (s, words) in enumerate(pinned)]
    empty = [c for c in classes if c.synset not in found]
    warnings = [f"{len(empty)} classes have no images (first: {empty[0].synset}, label {empty[0].index}); "
                "their labels are kept, later labels do not shift"] if empty else []
    return classes, warnings


def unusable_entry(relpath: str, synset: str, reason: str, readable: dict | None = None) -> tuple[str, str, dict]:
    """A file under --src that cannot be a sample: listed in the manifest as a reject with its reason.

    readable: the fields of the entry it would otherwise be (a regular file, a tar member), so that
    its bytes are still copied to OUT/quarantine like every other reject's (samples.UnusableSource).
    """
    relpath = printable_name(relpath)
    inner = (readable["kind"], readable["ref"]) if readable and readable["kind"] != "unusable" else ()
    return relpath, synset, dict(source=relpath, kind="unusable", ref=(printable_name(reason), *inner), relpath="")


# Python hands back a file name that is not UTF-8 with its odd bytes as lone surrogates, which no
# manifest (Parquet, JSON, the UTF-8 file lists DALI reads) can hold: such a file is a reject.
NOT_UTF8 = "its name is not valid UTF-8: rename it (e.g. with convmv -t utf8)"


def is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_name(name: str) -> str:
    """The name with bytes that are not UTF-8 written as \\xNN, so a reject can still be listed."""
    return name if is_utf8(name) else os.fsencode(name).decode("utf-8", "backslashreplace")


# Training shards are written in a seeded random order, not class by class: readers that stream
# tars (DALI's fn.readers.webdataset, webdataset) can only shuffle inside a buffer, so
# class-sorted shards would give them batches of one or two classes. Fixed seed: the same source
# always gives the same shards (resume and verify rely on it).
TRAIN_ORDER_SEED = 2016


def _listable(entry: tuple[str, str, dict]) -> tuple[str, str, dict]:
    """The entry, or a reject when its source name is not UTF-8: one check for every source form
    (folder and ImageNet trees, flat val folders and tars, train tar members)."""
    _, synset, fields = entry
    return entry if is_utf8(fields["source"]) else unusable_entry(fields["source"], synset, NOT_UTF8, fields)


def make_samples(split: str, entries, label_of: dict[str, int]) -> list[Sample]:
    """entries: (sort key, synset, Sample fields without split/position/label) in any order.

    Val keeps the sorted order; train is a seeded permutation of it (see TRAIN_ORDER_SEED).
    """
    ordered = sorted(map(_listable, entries), key=lambda entry: entry[0])
    if split == "train":
        random.Random(TRAIN_ORDER_SEED).shuffle(ordered)
    return [
        Sample(split=split, position=i, label=label_of.get(synset, -1), synset=synset, **fields)
        for i, (_, synset, fields) in enumerate(ordered)
    ]


def require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataPrepError(f"{what} {path} does not exist: check --src")
    if not path.is_dir():
        raise DataPrepError(f"{what} {path} is not a directory: check --src")
    return path
