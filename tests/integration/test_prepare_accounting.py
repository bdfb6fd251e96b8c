"""`dtrain prepare` accounts for every source file the same way in every form (issue #25).

The tar form and the extracted tree of the same data give the same classes and labels; links never
carry images into another class; every reject is quarantined when its bytes can be read; identical
files are counted; a run that cannot give a usable output says so in one line.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from prepare_trees import COMMON, jpeg, make_tree, manifest, one_line, run_cli

from dtrain_prep import fixtures, layout
from dtrain_prep.cli import prepare
from dtrain_prep.sources.imagenet import TRAIN_TAR, VAL_TAR


def _labels_by_file(out: Path) -> dict[str, tuple[str, int, str]]:
    """file name -> (synset, label, status), whatever the form called its source."""
    return {row["source"].rsplit("/", 1)[-1]: (row["synset"], row["label"], row["status"]) for row in manifest(out)}


# item 1: an empty class tar keeps its label ------------------------------------------------------

def test_tar_form_keeps_an_empty_class_like_the_folder_form(tmp_path):
    tree = tmp_path / "tree"
    fixtures.build_imagenet_tree(tree, per_class=2, val_per_class=0, odd_files=False)
    empty = sorted(fixtures.SYNSETS)[1]
    for image in (tree / "train" / empty).iterdir():
        image.unlink()
    (tree / "val").rmdir()  # the case: train alone
    fixtures.build_imagenet_tars(tree, tmp_path / "tars")
    from_tree, from_tars = tmp_path / "from_tree", tmp_path / "from_tars"
    run_cli("imagenet", "--src", tree, "--out", from_tree, "--formats", "wds", *COMMON)
    result = CliRunner().invoke(prepare, ["imagenet", "--src", str(tmp_path / "tars"), "--out", str(from_tars),
                                          "--formats", "wds", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and empty in result.output

    classes = json.loads((from_tars / layout.CLASSES).read_text())
    assert classes == json.loads((from_tree / layout.CLASSES).read_text())
    assert [c["synset"] for c in classes] == sorted(fixtures.SYNSETS)
    assert _labels_by_file(from_tars) == _labels_by_file(from_tree)
    assert {label for _, label, _ in _labels_by_file(from_tars).values()} == {0, 2}


# item 3: --max-pixels is the only pixel limit --------------------------------------------------------

def test_a_real_image_above_pillows_limit_is_kept_when_max_pixels_allows_it(tmp_path):
    """A valid 182-Mpx PNG (1-bit: 22 KB on disk; ~1 GB and a few seconds to convert), in val so
    that no pixel statistics are taken of it."""
    src = make_tree(tmp_path / "src" / "train", classes=("a",), per_class=1).parent
    (src / "val" / "a").mkdir(parents=True)
    (src / "val" / "a" / "huge.png").write_bytes(fixtures.bilevel_png(14000, 13000))
    (src / "val" / "a" / "small.jpg").write_bytes(jpeg(5))  # val is not all rejected at 150M
    kept, refused = tmp_path / "kept", tmp_path / "refused"
    run_cli("folder", "--src", src, "--out", kept, "--formats", "wds", "--max-pixels", 200_000_000, *COMMON)
    row = next(r for r in manifest(kept) if r["source"] == "val/a/huge.png")
    assert (row["status"], row["width"], row["height"]) == (layout.STATUS_CONVERTED, 14000, 13000)
    run_cli("folder", "--src", src, "--out", refused, "--formats", "wds", "--max-pixels", 150_000_000, *COMMON)
    row = next(r for r in manifest(refused) if r["source"] == "val/a/huge.png")
    assert row["status"] == layout.STATUS_REJECTED and row["reason"].endswith(
        "is over the limit of 150000000 (raise --max-pixels to keep it)")


# item 4: links never carry images into another class ---------------------------------------------

def test_links_that_leave_their_class_folder_are_rejects_and_no_image_gets_two_labels(tmp_path):
    train = make_tree(tmp_path / "src" / "train", classes=("a", "b", "c"), per_class=2)
    elsewhere = make_tree(tmp_path / "elsewhere", classes=("shared",), per_class=2)
    links = {
        "train/a/to_sibling": train / "b",                   # a sibling class folder
        "train/a/to_train": train,                           # the tree above every class
        "train/a/to_sibling_file.jpg": train / "b" / "b0.jpg",
        "train/a/to_own_folder": train / "a",                # a loop
        "train/a/shared": elsewhere / "shared",              # out of --src: followed
        "train/b/shared_again": elsewhere / "shared",        # ... but only once
    }
    for link, target in links.items():
        (tmp_path / "src" / link).symlink_to(target)
    (train / "d").symlink_to(train / "a")                    # a class folder that is another class's
    out = tmp_path / "out"
    run_cli("folder", "--src", tmp_path / "src", "--out", out, "--formats", "wds", *COMMON)
    rows = {r["source"]: r for r in manifest(out)}
    for link, reason in [("train/a/to_sibling", "points into class b"), ("train/a/to_train", "holds class folders"),
                         ("train/a/to_sibling_file.jpg", "points into class b"), ("train/a/to_own_folder", "loop"),
                         ("train/b/shared_again/shared0.jpg", "same file as train/a/shared/shared0.jpg"),
                         ("train/d", "overlaps class a")]:
        assert rows[link]["status"] == layout.STATUS_REJECTED and reason in rows[link]["reason"], link
    accepted = [r for r in rows.values() if r["status"] != layout.STATUS_REJECTED]
    assert sorted(r["source"] for r in accepted if r["label"] == 0) == [
        "train/a/a0.jpg", "train/a/a1.jpg", "train/a/shared/shared0.jpg", "train/a/shared/shared1.jpg"]
    assert sorted(r["source"] for r in accepted if r["label"] == 1) == ["train/b/b0.jpg", "train/b/b1.jpg"]
    labels_of_image: dict[str, set] = {}
    for row in accepted:
        labels_of_image.setdefault(row["sha256"], set()).add(row["label"])
    assert all(len(labels) == 1 for labels in labels_of_image.values())
    classes = json.loads((out / layout.CLASSES).read_text())
    assert [c["synset"] for c in classes] == ["a", "b", "c", "d"]  # d keeps its label, empty


# item 5: every reject whose bytes can be read is quarantined ----------------------------------------

def test_readable_rejects_outside_classes_or_with_odd_names_are_quarantined(tmp_path):
    src = make_tree(tmp_path / "src", classes=("a", "b"), per_class=1)
    odd = os.fsencode(src / "a") + b"/caf\xe9.jpg"
    try:
        with open(odd, "wb") as handle:
            handle.write(jpeg(11))
    except OSError as exc:  # some file systems (APFS, ZFS with utf8only) refuse such names
        pytest.skip(f"this file system refuses a file name that is not UTF-8 ({exc})")
    (src / "stray.jpg").write_bytes(jpeg(12))
    os.mkfifo(src / "b" / "fifo.jpg")  # not readable without blocking: listed, nothing copied
    out = tmp_path / "out"
    run_cli("folder", "--src", src, "--out", out, "--formats", "wds", *COMMON)
    rejects = {r["source"]: r for r in json.loads((out / layout.SUMMARY).read_text())["rejects"]}
    assert set(rejects) == {"a/caf\\xe9.jpg", "stray.jpg", "b/fifo.jpg"}
    assert (out / rejects["a/caf\\xe9.jpg"]["quarantine"]).read_bytes() == jpeg(11)
    assert (out / rejects["stray.jpg"]["quarantine"]).read_bytes() == jpeg(12)
    assert rejects["b/fifo.jpg"]["quarantine"] == ""


# item 6: in the tar form too, every member is a manifest row -----------------------------------------

def _add_member(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
                link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    tar.addfile(info, io.BytesIO(data) if data else None)


def _odd_members(tar: tarfile.TarFile, image: str) -> list[str]:
    _add_member(tar, ".DS_Store", b"\0\0\0\1Bud1")
    _add_member(tar, "link.JPEG", kind=tarfile.SYMTYPE, link=image)
    _add_member(tar, "hard.JPEG", kind=tarfile.LNKTYPE, link=image)
    _add_member(tar, "fifo.JPEG", kind=tarfile.FIFOTYPE)
    _add_member(tar, "folder", kind=tarfile.DIRTYPE)  # a folder is not a file: no row
    return [".DS_Store", "link.JPEG", "hard.JPEG", "fifo.JPEG"]


def test_tar_members_that_are_not_images_are_rows_with_their_reason(tmp_path):
    tree = tmp_path / "tree"
    fixtures.build_imagenet_tree(tree, per_class=1, val_per_class=1, odd_files=False)
    src = tmp_path / "tars"
    src.mkdir()
    (src / "LOC_val_solution.csv").write_bytes((tree / "LOC_val_solution.csv").read_bytes())
    expected = set()
    with tarfile.open(src / TRAIN_TAR, "w") as outer:
        for class_dir in sorted((tree / "train").iterdir()):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as inner:
                image = next(class_dir.iterdir())
                _add_member(inner, image.name, image.read_bytes())
                names = [image.name] + _odd_members(inner, image.name)
            _add_member(outer, f"{class_dir.name}.tar", buffer.getvalue())
            expected |= {f"{TRAIN_TAR}::{class_dir.name}.tar/{name}" for name in names}
        _add_member(outer, "README.txt", b"not a class\n")
        expected.add(f"{TRAIN_TAR}::README.txt")
    with tarfile.open(src / VAL_TAR, "w") as val:
        images = sorted((tree / "val").iterdir())
        for image in images:
            _add_member(val, image.name, image.read_bytes())
        names = [image.name for image in images] + _odd_members(val, images[0].name)
        expected |= {f"{VAL_TAR}::{name}" for name in names}
    out = tmp_path / "out"
    run_cli("imagenet", "--src", src, "--out", out, "--formats", "wds", *COMMON)
    rows = {r["source"]: r for r in manifest(out)}
    assert set(rows) == expected
    accepted = {s for s, r in rows.items() if r["status"] != layout.STATUS_REJECTED}
    assert len(accepted) == 2 * len(fixtures.SYNSETS)
    assert not any(s.endswith(("link.JPEG", "fifo.JPEG")) for s in accepted)
    assert all(rows[s]["reason"] for s in expected - accepted)
    assert "symbolic link to" in rows[f"{VAL_TAR}::link.JPEG"]["reason"]
    assert "FIFO" in rows[f"{TRAIN_TAR}::n01440764.tar/fifo.JPEG"]["reason"]
    assert "not a per-class tar" in rows[f"{TRAIN_TAR}::README.txt"]["reason"]
    quarantined = {r["source"] for r in json.loads((out / layout.SUMMARY).read_text())["rejects"] if r["quarantine"]}
    assert f"{TRAIN_TAR}::README.txt" in quarantined and f"{VAL_TAR}::.DS_Store" in quarantined


# item 7: identical files are counted and marked, and kept ---------------------------------------------

def test_identical_files_are_marked_as_duplicates_of_the_first_and_counted(tmp_path):
    src = tmp_path / "src"
    make_tree(src / "train", classes=("a", "b"), per_class=3)
    make_tree(src / "val", classes=("a", "b"), per_class=1)
    (src / "val" / "a" / "a0.jpg").write_bytes(jpeg(999))  # make_tree's val/a/a0.jpg is train/a/a0.jpg
    (src / "train" / "b" / "copy_of_a0.jpg").write_bytes((src / "train" / "a" / "a0.jpg").read_bytes())
    (src / "train" / "a" / "again_a0.jpg").write_bytes((src / "train" / "a" / "a0.jpg").read_bytes())
    (src / "val" / "b" / "b0.jpg").write_bytes((src / "train" / "b" / "b1.jpg").read_bytes())  # a leak
    out = tmp_path / "out"
    result = CliRunner().invoke(prepare, ["folder", "--src", str(src), "--out", str(out), "--formats", "wds",
                                          "--shard-size", "4", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "3 duplicates" in result.output and "1 of another class" in result.output

    rows = manifest(out)
    assert all(r["status"] == layout.STATUS_OK for r in rows)  # kept
    by_digest: dict[str, list[dict]] = {}
    for row in rows:  # manifest order is reading order: the first of each group is its original
        by_digest.setdefault(row["sha256"], []).append(row)
    groups = [group for group in by_digest.values() if len(group) > 1]
    assert sorted(sorted(r["source"] for r in g) for g in groups) == [
        ["train/a/a0.jpg", "train/a/again_a0.jpg", "train/b/copy_of_a0.jpg"], ["train/b/b1.jpg", "val/b/b0.jpg"]]
    for original, *copies in groups:
        assert original["duplicate_of"] == "" and all(c["duplicate_of"] == original["source"] for c in copies)
    assert sum(r["duplicate_of"] != "" for r in rows) == 3

    duplicates = json.loads((out / layout.SUMMARY).read_text())["duplicates"]
    assert {k: duplicates[k] for k in ("images", "other_class", "other_split", "kept")} == {
        "images": 3, "other_class": 1, "other_split": 1, "kept": True}
    assert {e["source"] for e in duplicates["examples"]} == {r["source"] for r in rows if r["duplicate_of"]}


# item 8: no usable output, or a finished output of another run, is a one-line error -----------------

def test_a_run_that_rejects_every_image_is_a_one_line_error(tmp_path):
    src = make_tree(tmp_path / "src", classes=("a", "b"), per_class=2)  # 40x30 images
    out = tmp_path / "out"
    for _ in range(2):  # the re-run of the same command says the same, it is not "complete"
        line = one_line(run_cli("folder", "--src", src, "--out", out, "--formats", "wds", "--max-pixels", 1000,
                                *COMMON, expect=2))
        assert "all 4 train files were rejected" in line and "over the limit of 1000" in line
        assert "--overwrite" in line and not (out / layout.SUMMARY).exists()
    assert {r["status"] for r in manifest(out)} == {layout.STATUS_REJECTED}  # the reasons are there
    run_cli("folder", "--src", src, "--out", out, "--formats", "wds", "--overwrite", *COMMON)
    assert "OK" in run_cli("verify", out).output


def test_a_finished_output_rerun_with_other_options_or_source_is_refused(tmp_path):
    src = make_tree(tmp_path / "src", classes=("a", "b"), per_class=2)
    out = tmp_path / "out"
    command = ["folder", "--src", src, "--out", out, "--formats", "wds", "--shard-size", "4", "--workers", "1"]
    run_cli(*command, "--quiet")
    again = run_cli(*command[:-2], "--workers", "2")  # same output options: nothing to do
    assert "already complete: nothing to do" in again.output
    line = one_line(run_cli(*command, "--shard-size", 3, "--max-pixels", 5000, "--quiet", expect=2))
    assert "finished output of other options" in line and "--overwrite" in line
    assert "--shard-size 4 (now 3)" in line and "--max-pixels 89478485 (now 5000)" in line
    (src / "b" / "new.jpg").write_bytes(jpeg(77))
    line = one_line(run_cli(*command, "--quiet", expect=2))
    assert "another source" in line and "--overwrite" in line
