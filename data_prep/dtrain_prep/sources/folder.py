"""Class-per-folder image trees (`dtrain prepare folder`, and ImageNet's extracted train tree)."""

from __future__ import annotations

import os
import random
import stat
from dataclasses import dataclass, field
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


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@dataclass
class _Tree:
    """What links inside class folders may reach: each class folder's real path (none may reach
    another's), the real path of --src, and the real files already read through links."""
    src_real: str
    class_reals: dict[str, str]
    linked_files: dict[str, str] = field(default_factory=dict)  # real path -> relpath it was read as

    def link_reason(self, target: str, synset: str, own: str) -> str | None:
        """Why a link from class folder `synset` (real path `own`) to real path `target` is not
        followed, or None.

        Rule: a link is followed when it leads out of --src altogether (images kept on another
        disk), or to a file of its own class folder. One that reaches another class, a folder
        holding class folders or anything else under --src would give those images a second
        label; a link to a folder of its own class would read that folder twice (or loop).
        """
        if _inside(target, own):
            return f"link to {target}, a folder its class reads anyway (a link loop)" if os.path.isdir(target) else None
        for other, folder in self.class_reals.items():
            if _inside(target, folder):
                return f"link to {target} leaves class folder {synset}: it points into class {other}"
            if _inside(folder, target):
                return f"link to {target} leaves class folder {synset}: it holds class folders"
        if _inside(target, self.src_real) or _inside(self.src_real, target):
            return f"link to {target} leaves class folder {synset}: it points elsewhere in --src"
        return None


def _linked_file(tree: _Tree, path: Path, src_root: Path, synset: str) -> tuple[str, str, dict]:
    """A file reached through a link out of --src: read once, whichever class links to it first."""
    relpath, real = path.relative_to(src_root).as_posix(), os.path.realpath(path)
    if real in tree.linked_files:
        return unusable_entry(relpath, synset, f"the same file as {tree.linked_files[real]} (links reach it twice)",
                              _file_entry(path, src_root, synset)[2])
    tree.linked_files[real] = relpath
    return _file_entry(path, src_root, synset)


def _walk_class(class_dir: Path, src_root: Path, synset: str, entries: list, tree: _Tree) -> None:
    """Every file below class_dir, through the links tree.link_reason allows; a folder reached
    twice (a loop outside --src) is read once."""
    own = os.path.realpath(class_dir)
    seen = {own}
    folders = [(class_dir, False)]  # (folder, reached through a link out of --src)
    while folders:
        folder, linked = folders.pop()
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = Path(entry.path)
            link = entry.is_symlink() and os.path.exists(path)  # a broken link is left to _file_entry
            reason = tree.link_reason(os.path.realpath(path), synset, own) if link else None
            if reason:
                entries.append(unusable_entry(path.relative_to(src_root).as_posix(), synset, reason,
                                              _file_entry(path, src_root, synset)[2]))
            elif entry.is_dir():  # follows links
                real = os.path.realpath(path)
                if real in seen:
                    entries.append(unusable_entry(path.relative_to(src_root).as_posix(), synset,
                                                  f"symbolic link loop (already read as {real})"))
                else:
                    seen.add(real)
                    folders.append((path, linked or link))
            elif (linked or link) and not _inside(os.path.realpath(path), own):
                entries.append(_linked_file(tree, path, src_root, synset))
            else:
                entries.append(_file_entry(path, src_root, synset))


def _class_tree(root: Path, src_root: Path, classes: set[str]) -> tuple[_Tree, list]:
    """The class folders' real paths. A class folder that is a link overlapping another class's
    folder is one reject (its class keeps its label, empty) rather than a second label for those
    images; folders that are not links claim their real path first."""
    tree, rejects = _Tree(os.path.realpath(src_root), {}), []
    for name in sorted(classes, key=lambda n: ((root / n).is_symlink(), n)):
        real = os.path.realpath(root / name)
        clash = next((c for c, f in tree.class_reals.items() if _inside(real, f) or _inside(f, real)), None)
        if clash is None:
            tree.class_reals[name] = real
        else:
            rejects.append(unusable_entry((root / name).relative_to(src_root).as_posix(), name,
                                          f"class folder {name} is a link to {real}, which overlaps "
                                          f"class {clash}'s folder"))
    return tree, rejects


def scan_class_tree(root: Path, src_root: Path) -> list[tuple[str, str, dict]]:
    """Every file under root as a candidate: root/<class>/** with its class, anything else unlabelled.

    All files are candidates, whatever their extension or name: a file that is not an image (or
    sits outside a class folder, or cannot be read) is listed as a reject with its reason rather
    than silently skipped, so the manifest accounts for every file under --src.
    """
    classes = set(class_folders(root))
    if not classes:
        raise DataPrepError(f"no class folders in {root}: expected {root}/<class>/<image files>")
    odd = sorted(name for name in classes if not is_utf8(name))
    if odd:  # a class name goes into classes.json and every row: it cannot be listed as a reject
        raise DataPrepError(f"class folder '{printable_name(odd[0])}' in {root}: {NOT_UTF8}")
    tree, entries = _class_tree(root, src_root, classes)
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name in tree.class_reals:
            _walk_class(Path(entry.path), src_root, entry.name, entries, tree)
        elif entry.name in classes:
            continue  # a class folder linked to another class's: its reject is in entries
        elif entry.is_dir():  # a hidden folder: no class of its own
            _walk_class(Path(entry.path), src_root, "", entries, tree)
        else:
            entries.append(_file_entry(Path(entry.path), src_root, ""))
    for index, entry in enumerate(entries):
        if entry[1] == "" and entry[2]["kind"] == "file":
            entries[index] = unusable_entry(entry[0], "", f"not inside a class folder of {root.name}/", entry[2])
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
