"""Class-per-folder image trees (`dtrain prepare folder`, and ImageNet's extracted train tree)."""

from __future__ import annotations

import os
import random
from pathlib import Path

from ..errors import DataPrepError
from ..plan import SourcePlan, classes_from_synsets, make_samples, require_dir


def _visible(name: str) -> bool:
    return not name.startswith(".")


def scan_class_tree(root: Path, src_root: Path) -> list[tuple[str, str, dict]]:
    """Every regular file under root/<class>/ (nested folders included) as a candidate.

    All files are candidates, whatever their extension: a file that is not an image is listed
    as a reject with its reason rather than silently skipped.
    """
    entries = []
    class_dirs = sorted((e for e in os.scandir(root) if e.is_dir() and _visible(e.name)), key=lambda e: e.name)
    if not class_dirs:
        raise DataPrepError(f"no class folders in {root}: expected {root}/<class>/<image files>")
    for class_dir in class_dirs:
        for dirpath, dirnames, filenames in os.walk(class_dir.path):
            dirnames[:] = sorted(d for d in dirnames if _visible(d))
            for name in filenames:
                if not _visible(name):
                    continue
                path = Path(dirpath) / name
                relpath = path.relative_to(src_root).as_posix()
                entries.append((relpath, class_dir.name,
                                dict(source=relpath, kind="file", ref=(str(path),), relpath=relpath)))
    if not entries:
        raise DataPrepError(f"the class folders in {root} hold no files: check --src")
    return entries


def _holdout(entries, fraction: float, seed: int):
    """Deterministic per-class split of one tree into train and val."""
    by_class: dict[str, list] = {}
    for entry in sorted(entries, key=lambda e: e[0]):
        by_class.setdefault(entry[1], []).append(entry)
    train, val = [], []
    for synset in sorted(by_class):
        members = by_class[synset]
        random.Random(f"{seed}:{synset}").shuffle(members)
        cut = round(len(members) * fraction)
        val.extend(members[:cut])
        train.extend(members[cut:])
    return train, val


def folder_plan(src: Path, val_fraction: float = 0.0, seed: int = 0) -> SourcePlan:
    """src/train/<class>/* (+ src/val/<class>/*), or src/<class>/* split by --val-fraction."""
    src = require_dir(Path(src).resolve(), "--src")
    if (src / "train").is_dir():
        split_entries = {"train": scan_class_tree(src / "train", src)}
        if (src / "val").is_dir():
            split_entries["val"] = scan_class_tree(src / "val", src)
    else:
        entries = scan_class_tree(src, src)
        split_entries = {"train": entries}
        if val_fraction > 0:
            split_entries["train"], split_entries["val"] = _holdout(entries, val_fraction, seed)
    classes = classes_from_synsets(e[1] for e in split_entries["train"])
    label_of = {c.synset: c.index for c in classes}
    unknown = sorted({e[1] for e in split_entries.get("val", [])} - set(label_of))
    if unknown:
        raise DataPrepError(f"val has {len(unknown)} class folders not in train (first: {unknown[0]})")
    splits = {split: make_samples(split, entries, label_of) for split, entries in split_entries.items()}
    return SourcePlan("folder", classes, splits, source_root=src,
                      details={"src": str(src), "val_fraction": val_fraction, "seed": seed})

