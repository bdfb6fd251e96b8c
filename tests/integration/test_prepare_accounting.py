"""`dtrain prepare` accounts for every source file the same way in every form (issue #25).

The tar form and the extracted tree of the same data give the same classes and labels; links never
carry images into another class; every reject is quarantined when its bytes can be read; identical
files are counted; a run that cannot give a usable output says so in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dtrain_prep import fixtures, layout
from dtrain_prep.cli import prepare
from prepare_trees import COMMON, make_tree, manifest, run_cli


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
    kept, refused = tmp_path / "kept", tmp_path / "refused"
    run_cli("folder", "--src", src, "--out", kept, "--formats", "wds", "--max-pixels", 200_000_000, *COMMON)
    row = next(r for r in manifest(kept) if r["split"] == "val")
    assert (row["status"], row["width"], row["height"]) == (layout.STATUS_CONVERTED, 14000, 13000)
    run_cli("folder", "--src", src, "--out", refused, "--formats", "wds", "--max-pixels", 150_000_000, *COMMON)
    row = next(r for r in manifest(refused) if r["split"] == "val")
    assert row["status"] == layout.STATUS_REJECTED and row["reason"].endswith(
        "is over the limit of 150000000 (raise --max-pixels to keep it)")
