"""ILSVRC-2012 as people have it: an extracted tree or the original tars, val labels in any form.

Accepted under --src (or the Kaggle layout's ILSVRC/Data/CLS-LOC below it):
  train/nXXXXXXXX/*.JPEG                           extracted train tree
  val/nXXXXXXXX/*.JPEG  or  val/*.JPEG (flat)      val in class folders or flat
  ILSVRC2012_img_train.tar                         tar of per-class tars, read in place
  ILSVRC2012_img_val.tar                           flat val JPEGs, read in place
  LOC_val_solution.csv, LOC_synset_mapping.txt     Kaggle label files (looked up in --src)
Flat val labels come from --val-labels (LOC_val_solution.csv; a text file of one synset per line
in sorted file order; "file synset" lines; or the devkit's ILSVRC2012_validation_ground_truth.txt,
whose 1-based ids are mapped to synsets through the devkit's data/meta.mat with scipy).
"""

from __future__ import annotations

import csv
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import DataPrepError
from ..plan import SourcePlan, class_table, make_samples, require_dir, unusable_entry
from .folder import class_folders, scan_class_tree

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
LOC_SOLUTION = "LOC_val_solution.csv"
SYNSET_MAPPING = "LOC_synset_mapping.txt"
DEVKIT = "ILSVRC2012_devkit_t12"
SYNSET_PATTERN = re.compile(r"^n\d{8}$")


def _open_plain_tar(path: Path) -> tarfile.TarFile:
    try:
        # "r:" = uncompressed only: member offsets are then byte offsets in the file itself.
        return tarfile.open(path, "r:")
    except tarfile.ReadError as exc:
        raise DataPrepError(f"{path} is not an uncompressed tar ({exc}): "
                            "ImageNet's original tars are plain tars; decompress it first") from None


# Tar members that are not files: listed as rejects (every file is a row), never read.
_NOT_A_FILE = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.FIFOTYPE: "a FIFO",
               tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device"}


def _member_fields(tar_path: Path, source: str, member: tarfile.TarInfo, base: int = 0) -> dict:
    """A member as entry fields: a byte range of the outer file (base: where its own tar's bytes
    start there), or a reject with its reason for a member that is not a file."""
    if member.isreg():
        return dict(source=source, kind="tar_slice", ref=(str(tar_path), base + member.offset_data, member.size))
    what = _NOT_A_FILE.get(member.type, f"a member of tar type {member.type!r}")
    target = f" to {member.linkname}" if member.issym() or member.islnk() else ""
    return unusable_entry(source, "", f"{what}{target} inside the tar, not a file (tar links are not followed)")[2]


def _class_tar_entries(path: Path, outer: tarfile.TarFile, class_member: tarfile.TarInfo, synset: str) -> list:
    """Every member of one per-class tar but its folders; hidden files too (as in a class folder)."""
    prefix = f"{path.name}::{class_member.name}"
    if class_member.size == 0:  # a 0-byte class tar: no members (tarfile calls it unreadable)
        return []
    try:
        with tarfile.open(fileobj=outer.extractfile(class_member), mode="r:") as inner:
            members = [m for m in inner if not m.isdir()]
    except tarfile.TarError as exc:
        return [unusable_entry(prefix, synset, f"the class tar is not a readable tar ({exc}); its class keeps "
                                               "its label", _member_fields(path, prefix, class_member))]
    return [(f"{prefix}/{m.name}", synset, _member_fields(path, f"{prefix}/{m.name}", m, class_member.offset_data))
            for m in members]


def scan_train_tar(path: Path) -> tuple[list[str], list[tuple[str, str, dict]]]:
    """The classes (one per per-class tar, empty ones included: like an empty class folder, an
    empty class tar keeps its label) and their members, as byte ranges of the outer file. Any
    other member of the outer tar is a reject, as a file outside a class folder is."""
    classes, entries = [], []
    with _open_plain_tar(path) as outer:
        for member in outer:
            name = Path(member.name).name
            if member.isreg() and name.endswith(".tar") and not name.startswith("."):
                classes.append(Path(name).stem)
                entries.extend(_class_tar_entries(path, outer, member, classes[-1]))
            elif not member.isdir():
                source = f"{path.name}::{member.name}"
                entries.append(unusable_entry(source, "", "not a per-class tar (nXXXXXXXX.tar) of the train tar",
                                              _member_fields(path, source, member)))
    if not classes:
        raise DataPrepError(f"{path} holds no per-class tars: is it {TRAIN_TAR}?")
    if not any(fields["kind"] == "tar_slice" for _, _, fields in entries):
        raise DataPrepError(f"the per-class tars in {path} hold no files: is it {TRAIN_TAR}?")
    return classes, entries


# A hidden file in flat val (.DS_Store, ._x.JPEG) has no val label: a reject, not an unlabelled error.
HIDDEN_IN_FLAT_VAL = "a hidden file in flat val (it has no label)"


def scan_flat_tar(path: Path) -> list[tuple[str, dict]]:
    found = []
    with _open_plain_tar(path) as tar:
        for member in (m for m in tar if not m.isdir()):
            name, source = Path(member.name).name, f"{path.name}::{member.name}"
            fields = _member_fields(path, source, member)
            if name.startswith(".") and fields["kind"] != "unusable":
                fields = unusable_entry(source, "", HIDDEN_IN_FLAT_VAL, fields)[2]
            found.append((name, fields))
    if not any(fields["kind"] == "tar_slice" for _, fields in found):
        raise DataPrepError(f"{path} holds no files: is it {VAL_TAR}?")
    return found


def scan_flat_dir(root: Path, src_root: Path) -> list[tuple[str, dict]]:
    found = []
    for path in sorted(root.iterdir()):
        relpath = path.relative_to(src_root).as_posix()
        fields = dict(source=relpath, kind="file", ref=(str(path),), relpath=relpath)
        if not path.is_file():
            fields = unusable_entry(relpath, "", "not a regular file (or a broken link)")[2]
        elif path.name.startswith("."):
            fields = unusable_entry(relpath, "", HIDDEN_IN_FLAT_VAL, fields)[2]
        found.append((path.name, fields))
    if not any(fields["kind"] == "file" for _, fields in found):
        raise DataPrepError(f"{root} is empty: check --src")
    return found


def _devkit_synsets_by_id(meta_mat: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID for the 1,000 leaf synsets of the devkit's meta.mat."""
    if not meta_mat.exists():
        raise DataPrepError(f"{meta_mat} not found: the devkit ground truth needs the devkit's data/meta.mat "
                            "(pass --devkit DIR), or give --val-labels LOC_val_solution.csv")
    from scipy.io import loadmat

    synsets = loadmat(str(meta_mat), squeeze_me=True)["synsets"]
    return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}


def read_val_labels(path: Path, devkit: Path | None) -> tuple[dict[str, str] | None, list[str] | None]:
    """(file stem -> synset) or (synsets in sorted file order), whichever the file holds."""
    if not path.exists():
        raise DataPrepError(f"--val-labels {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or not {"ImageId", "PredictionString"} <= set(rows[0]):
            raise DataPrepError(f"{path} is not a LOC_val_solution.csv (columns ImageId,PredictionString)")
        return {r["ImageId"]: r["PredictionString"].split()[0] for r in rows}, None
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if lines and all(len(parts) == 2 for parts in lines):
        return {Path(name).stem: synset for name, synset in lines}, None
    tokens = [parts[0] for parts in lines]
    if tokens and all(SYNSET_PATTERN.match(t) for t in tokens):
        return None, tokens
    if tokens and all(t.isdigit() for t in tokens):
        meta = (devkit / "data" / "meta.mat") if devkit else path.parent / "meta.mat"
        by_id = _devkit_synsets_by_id(meta)
        return None, [by_id[int(t)] for t in tokens]
    raise DataPrepError(f"cannot read val labels from {path}: expected LOC_val_solution.csv, one synset per "
                        "line, 'file synset' lines or ILSVRC2012_validation_ground_truth.txt")


def label_flat_val(found: list[tuple[str, dict]], labels_file: Path | None, devkit: Path | None):
    """Attach a synset to every flat val file; any mismatch is an error that names a file."""
    if labels_file is None:
        raise DataPrepError(f"val is flat (no class folders): give its labels with --val-labels "
                            f"({LOC_SOLUTION} or the devkit ground truth)")
    rejects = [(fields["source"], "", fields) for _, fields in found if fields["kind"] == "unusable"]
    found = sorted((f for f in found if f[1]["kind"] != "unusable"), key=lambda f: f[0])
    by_name, by_order = read_val_labels(labels_file, devkit)
    if by_order is not None:
        if len(by_order) != len(found):
            raise DataPrepError(f"{labels_file} lists {len(by_order)} labels but val has {len(found)} files: "
                                "they must match one to one (sorted file order)")
        pairs: Iterable[tuple[tuple[str, dict], str]] = zip(found, by_order, strict=True)
    else:
        by_stem = by_name or {}  # read_val_labels gives one of the two
        stems = [Path(name).stem for name, _ in found]
        unlabelled = [name for (name, _), stem in zip(found, stems, strict=True) if stem not in by_stem]
        if unlabelled:
            raise DataPrepError(f"{len(unlabelled)} val files have no label in {labels_file} "
                                f"(first: {unlabelled[0]}): use the labels file of this val set")
        missing = sorted(set(by_stem) - set(stems))
        if missing:
            raise DataPrepError(f"{labels_file} labels {len(missing)} val images that are not in the val "
                                f"source (first missing file: {missing[0]}): the val copy is incomplete")
        pairs = ((entry, by_stem[Path(entry[0]).stem]) for entry in found)
    return [(fields["source"], synset, fields) for (_, fields), synset in pairs] + rejects


def read_synset_names(path: Path | None) -> dict[str, str]:
    """LOC_synset_mapping.txt: "n01440764 tench, Tinca tinca" -> {"n01440764": "tench, Tinca tinca"}."""
    if path is None or not path.exists():
        return {}
    names = {}
    for line in path.read_text().splitlines():
        synset, _, words = line.strip().partition(" ")
        if synset:
            names[synset] = words.strip() or synset
    return names


def _first_existing(*paths: Path | None) -> Path | None:
    return next((p for p in paths if p is not None and p.exists()), None)


def imagenet_plan(src: Path, train_tar: Path | None = None, val_tar: Path | None = None,
                  val_labels: Path | None = None, devkit: Path | None = None,
                  synset_names: Path | None = None, classes_file: Path | None = None) -> SourcePlan:
    src = require_dir(Path(src).resolve(), "--src")
    kaggle = src / "ILSVRC" / "Data" / "CLS-LOC"
    root = kaggle if kaggle.is_dir() else src
    train_tar = train_tar or _first_existing(root / TRAIN_TAR, src / TRAIN_TAR)
    val_tar = val_tar or _first_existing(root / VAL_TAR, src / VAL_TAR)
    devkit = devkit or _first_existing(src / DEVKIT)
    val_labels = val_labels or _first_existing(src / LOC_SOLUTION)

    if (root / "train").is_dir():
        train = scan_class_tree(root / "train", src)
        folders = class_folders(root / "train")
        form = "tree"
    elif train_tar is not None:
        folders, train = scan_train_tar(Path(train_tar))
        form = "tar"
    else:
        raise DataPrepError(f"no ImageNet train data in {src}: expected {src}/train/<synset>/*.JPEG "
                            f"or {src}/{TRAIN_TAR} (or pass --train-tar)")
    val = []
    val_dir = root / "val"
    if val_dir.is_dir() and any(p.is_dir() for p in val_dir.iterdir()):
        val = scan_class_tree(val_dir, src)
    elif val_dir.is_dir():
        val = label_flat_val(scan_flat_dir(val_dir, src), val_labels, devkit)
    elif val_tar is not None:
        val = label_flat_val(scan_flat_tar(Path(val_tar)), val_labels, devkit)

    names = read_synset_names(_first_existing(synset_names, src / SYNSET_MAPPING))
    classes, warnings = class_table(folders, train, classes_file, names)
    label_of = {c.synset: c.index for c in classes}
    unknown = sorted({e[1] for e in val} - set(label_of) - {""})
    if unknown:
        raise DataPrepError(f"val labels name {len(unknown)} synsets that train does not have "
                            f"(first: {unknown[0]}): train and val are from different datasets")
    splits = {"train": make_samples("train", train, label_of)}
    if val:
        splits["val"] = make_samples("val", val, label_of)
    details = {"src": str(src), "form": form, "train_tar": str(train_tar or ""), "val_tar": str(val_tar or ""),
               "val_labels": str(val_labels or ""), "synset_names": bool(names),
               "classes_file": str(classes_file or "")}
    return SourcePlan("imagenet", classes, splits, source_root=src, details=details, warnings=warnings)
