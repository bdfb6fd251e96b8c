"""Class-per-folder image trees (`dtrain prepare folder`, and ImageNet's extracted train tree)."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

from ..errors import DataPrepError
from ..plan import NOT_UTF8, SourcePlan, class_table, is_utf8, make_samples, printable_name, require_dir, unusable_entry


def class_folders(root: Path) -> list[str]:
    """Every class folder under root, empty ones included (they still own a label)."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _file_entry(path: Path, src_root: Path, synset: str) -> tuple[str, str, dict]:
    relpath = path.relative_to(src_root).as_posix()
    try:
        mode = os.stat(path).st_mode  # follows links: a symlinked image is a candidate like any other
    except OSError as exc:
        return unusable_entry(relpath, synset, f"broken link or unreadable entry ({exc.strerror})")
    if not stat.S_ISREG(mode):  # a FIFO or device would block or never end when read
        return unusable_entry(relpath, synset, "not a regular file")
    return relpath, synset, dict(source=relpath, kind="file", ref=(str(path),), relpath=relpath)


def _walk_class(class_dir: Path, src_root: Path, synset: str, entries: list) -> None:
    """Every file below class_dir, through symlinked folders too; a folder seen twice is a link loop."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            relpath = Path(dirpath).relative_to(src_root).as_posix()
            entries.append(unusable_entry(relpath, synset, f"symbolic link loop (already read as {real})"))
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            entries.append(_file_entry(Path(dirpath) / name, src_root, synset))


def scan_class_tree(root: Path, src_root: Path) -> list[tuple[str, str, dict]]:
    """Every file under root as a candidate: root/<class>/** with its class, anything else unlabelled.

    All files are candidates, whatever their extension or name: a file that is not an image (or
    sits outside a class folder, or cannot be read) is listed as a reject with its reason rather
    than silently skipped, so the manifest accounts for every file under --src.
    """
    entries: list[tuple[str, str, dict]] = []
    classes = set(class_folders(root))
    if not classes:
        raise DataPrepError(f"no class folders in {root}: expected {root}/<class>/<image files>")
    odd = sorted(name for name in classes if not is_utf8(name))
    if odd:  # a class name goes into classes.json and every row: it cannot be listed as a reject
        raise DataPrepError(f"class folder '{printable_name(odd[0])}' in {root}: {NOT_UTF8}")
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name in classes:
            _walk_class(Path(entry.path), src_root, entry.name, entries)
        elif entry.is_dir():  # a hidden folder: no class of its own
            _walk_class(Path(entry.path), src_root, "", entries)
        else:
            entries.append(_file_entry(Path(entry.path), src_root, ""))
    for index, entry in enumerate(entries):
        if entry[1] == "" and entry[2]["kind"] == "file":
            entries[index] = unusable_entry(entry[0], "", f"not inside a class folder of {root.name}/")
    if not any(e[2]["kind"] == "file" for e in entries):
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
        cut = round(len(members) * fraction) if synset else 0  # unlabelled rejects stay in train
        val.extend(members[:cut])
        train.extend(members[cut:])
    return train, val


def folder_plan(src: Path, val_fraction: float = 0.0, seed: int = 0, classes_file: Path | None = None) -> SourcePlan:
    """src/train/<class>/* (+ src/val/<class>/*), or src/<class>/* split by --val-fraction."""
    src = require_dir(Path(src).resolve(), "--src")
    train_root = src / "train" if (src / "train").is_dir() else src
    split_entries = {"train": scan_class_tree(train_root, src)}
    if train_root != src and (src / "val").is_dir():
        split_entries["val"] = scan_class_tree(src / "val", src)
    elif train_root == src and val_fraction > 0:
        split_entries["train"], split_entries["val"] = _holdout(split_entries["train"], val_fraction, seed)
    classes, warnings = class_table(class_folders(train_root), split_entries["train"], classes_file)
    label_of = {c.synset: c.index for c in classes}
    unknown = sorted({e[1] for e in split_entries.get("val", [])} - set(label_of) - {""})
    if unknown:
        raise DataPrepError(f"val has {len(unknown)} class folders not in train (first: {unknown[0]})")
    splits = {split: make_samples(split, entries, label_of) for split, entries in split_entries.items()}
    return SourcePlan("folder", classes, splits, source_root=src, warnings=warnings,
                      details={"src": str(src), "val_fraction": val_fraction, "seed": seed,
                               "classes_file": str(classes_file or "")})
