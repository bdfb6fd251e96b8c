"""`dtrain prepare` on messy input (issue #16): no input stops it, nothing is lost silently.

Each test builds a few tiny files of the kind that broke a real run and checks what the user
relies on: the run finishes, every file is accounted for, labels never shift, errors are one line
with exit status 2.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from prepare_trees import COMMON, jpeg, make_tree, manifest, one_line, run_cli

from dtrain_prep import fixtures, layout
from dtrain_prep.cli import prepare

# 1. decompression bomb -----------------------------------------------------------------------

def test_bomb_is_quarantined_and_the_run_finishes(tmp_path):
    src = make_tree(tmp_path / "src")
    (src / "b" / "bomb.png").write_bytes(fixtures.png_declaring(30000, 30000))
    out = tmp_path / "out"
    run_cli("folder", "--src", src, "--out", out, "--formats", "wds", *COMMON)
    rejected = [r for r in manifest(out) if r["status"] == layout.STATUS_REJECTED]
    assert [r["source"] for r in rejected] == ["b/bomb.png"] and "pixels" in rejected[0]["reason"]
    assert len(list((out / layout.QUARANTINE_DIR).rglob("*.bin"))) == 1
    assert not list(out.rglob("*.tmp*"))


def test_lowered_pixel_limit_rejects_from_the_cli(tmp_path):
    src = make_tree(tmp_path / "src", per_class=1)  # 40x30 images
    (src / "a" / "larger.jpg").write_bytes(jpeg(5, 41, 30))
    out = tmp_path / "out"
    run_cli("folder", "--src", src, "--out", out, "--formats", "wds", "--max-pixels", 40 * 30, *COMMON)
    status = {r["source"]: r["status"] for r in manifest(out)}
    assert status.pop("a/larger.jpg") == layout.STATUS_REJECTED
    assert set(status.values()) == {layout.STATUS_OK}


# 10. user errors exit 2 with one line -------------------------------------------------------

def test_out_that_is_a_file_exits_2(tmp_path):
    src = make_tree(tmp_path / "src", per_class=1)
    (tmp_path / "file").write_text("x")
    assert "is a file" in one_line(run_cli("folder", "--src", src, "--out", tmp_path / "file", *COMMON, expect=2))


def test_missing_src_exits_2(tmp_path):
    assert "does not exist" in one_line(
        run_cli("folder", "--src", tmp_path / "nope", "--out", tmp_path / "o", *COMMON, expect=2))
    result = run_cli("folder", "--out", tmp_path / "o", *COMMON, expect=2)
    assert "--src" in result.output


@pytest.mark.parametrize("change", ["missing_row", "extra_row"])
def test_val_csv_with_missing_or_extra_rows_exits_2(tmp_path, change):
    root = tmp_path / "tree"
    fixtures.build_imagenet_tree(root, per_class=1, val_per_class=1, odd_files=False)
    csv = root / "LOC_val_solution.csv"
    lines = csv.read_text().splitlines()
    lines = lines[:-1] if change == "missing_row" else lines + ["ILSVRC2012_val_99999999,n01440764 1 1 2 2"]
    csv.write_text("\n".join(lines) + "\n")
    line = one_line(run_cli("imagenet", "--src", root, "--out", tmp_path / "o", *COMMON, expect=2))
    assert "LOC_val_solution.csv" in line


# 4. empty class folder: labels never shift ------------------------------------------------------

def test_empty_class_keeps_its_label_and_warns(tmp_path):
    src = make_tree(tmp_path / "src", classes=("a", "b", "c"))
    for image in (src / "b").iterdir():
        image.unlink()
    out = tmp_path / "out"
    result = CliRunner().invoke(prepare, ["folder", "--src", str(src), "--out", str(out), "--formats", "wds",
                                          "--shard-size", "4", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "b" in result.output
    labels = {r["synset"]: r["label"] for r in manifest(out)}
    assert labels == {"a": 0, "c": 2}
    assert [c["synset"] for c in __import__("json").loads((out / layout.CLASSES).read_text())] == ["a", "b", "c"]


def test_classes_file_pins_the_list_and_refuses_unlisted_folders(tmp_path):
    src = make_tree(tmp_path / "src", classes=("b", "c"))
    listing = tmp_path / "classes.txt"
    listing.write_text("a first\nb second\nc third\n")
    out = tmp_path / "out"
    run_cli("folder", "--src", src, "--out", out, "--formats", "wds", "--classes", listing, *COMMON)
    assert {r["synset"]: r["label"] for r in manifest(out)} == {"b": 1, "c": 2}
    listing.write_text("b\n")
    line = one_line(run_cli("folder", "--src", src, "--out", tmp_path / "o2", "--classes", listing, *COMMON,
                            expect=2))
    assert "'c'" in line and "--classes" in line


# 5. every file under --src is accounted for ---------------------------------------------------------

def test_every_file_under_src_is_a_manifest_row(tmp_path):
    src = make_tree(tmp_path / "src" / "train", classes=("a", "b"))
    elsewhere = make_tree(tmp_path / "elsewhere", classes=("sub",))
    os.symlink(elsewhere / "sub", src / "a" / "linked")          # symlinked sub-folder of images
    os.symlink(src / "b", src / "b" / "loop")                      # a link loop
    os.symlink(tmp_path / "missing.jpg", src / "a" / "broken.jpg")  # a broken link
    os.mkfifo(src / "b" / "fifo.jpg")                              # would block a naive reader
    (src / "a" / ".hidden.jpg").write_bytes(jpeg(7))
    (src / "stray.jpg").write_bytes(jpeg(8))                       # outside any class folder
    out = tmp_path / "out"
    run_cli("folder", "--src", tmp_path / "src", "--out", out, "--formats", "wds", *COMMON)
    rows = manifest(out)
    on_disk = sum(len(files) for _, _, files in os.walk(src, followlinks=False))
    linked = len(list((elsewhere / "sub").iterdir()))
    loops = 1                                      # the looping link is one row, a reject
    assert len(rows) == on_disk + linked + loops
    status = {r["source"]: r for r in rows}
    assert all(status[f"train/a/linked/{p.name}"]["status"] == "ok" for p in (elsewhere / "sub").iterdir())
    assert status["train/a/linked/sub0.jpg"]["label"] == 0
    for reject in ("train/a/broken.jpg", "train/b/fifo.jpg", "train/stray.jpg", "train/b/loop"):
        assert status[reject]["status"] == "rejected" and status[reject]["reason"], reject
    assert status["train/a/.hidden.jpg"]["status"] == "ok"



def _odd_name(folder: Path, name: bytes) -> Path:
    try:
        os.mkdir(os.fsencode(folder) + b"/" + name)
    except OSError as exc:  # some file systems (APFS, ZFS with utf8only) refuse such names
        pytest.skip(f"this file system refuses a file name that is not UTF-8 ({exc})")
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


def test_a_file_name_that_is_not_utf8_is_a_reject_and_the_rest_is_prepared(tmp_path):
    src = make_tree(tmp_path / "src", classes=("a", "b"))
    odd = _odd_name(src / "a", b"caf\xe9.jpg")  # a latin-1 name, as copied from an old disk
    odd.rmdir()
    odd.write_bytes(jpeg(9))
    out = tmp_path / "out"
    run_cli("folder", "--src", src, "--out", out, "--formats", "wds,filelist", *COMMON)
    rows = {r["source"]: r for r in manifest(out)}
    assert rows["a/caf\\xe9.jpg"]["status"] == "rejected" and "UTF-8" in rows["a/caf\\xe9.jpg"]["reason"]
    assert sum(r["status"] != "rejected" for r in rows.values()) == 6


def test_a_class_folder_name_that_is_not_utf8_is_a_one_line_error(tmp_path):
    src = make_tree(tmp_path / "src", classes=("a",))
    (_odd_name(src, b"n0\xff") / "x.jpg").write_bytes(jpeg(3))
    line = one_line(run_cli("folder", "--src", src, "--out", tmp_path / "out", *COMMON, expect=2))
    assert "not valid UTF-8" in line and "n0\\xff" in line

# 6. --out inside --src ------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["train", "src"])
def test_out_inside_src_is_refused(tmp_path, where):
    src = make_tree(tmp_path / "src" / "train", classes=("a",)).parent
    out = src / "train" / "prepared" if where == "train" else src
    line = one_line(run_cli("folder", "--src", src, "--out", out, *COMMON, expect=2))
    assert "inside --src" in line


# 7. one prepare per --out ---------------------------------------------------------------------------

def test_second_prepare_into_a_busy_out_is_refused_naming_the_pid(tmp_path):
    import subprocess
    import sys

    src = make_tree(tmp_path / "src", per_class=1)
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from dtrain_prep.lock import locked_out\n"
        "with locked_out(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)"), str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = one_line(run_cli("folder", "--src", src, "--out", out, *COMMON, expect=2))
        assert f"PID {holder.pid}" in line and "in use" in line
        assert not (out / layout.WORK_DIR).exists()  # the busy run's files were not touched
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: its lock file is left behind, and the next run takes it over.
    assert (out / ".prepare.lock").exists()
    run_cli("folder", "--src", src, "--out", out, "--formats", "wds", *COMMON)
    assert (out / layout.SUMMARY).exists()


# 2. large images in the .beton; a dead FFCV writer fails the run (exit 1) -------------------------------

needs_ffcv = pytest.mark.skipif(importlib.util.find_spec("ffcv") is None, reason="ffcv is not installed")


def _big_image_tree(tmp_path: Path) -> Path:
    src = make_tree(tmp_path / "src", classes=("a", "b"), per_class=2)
    (src / "a" / "big.jpg").write_bytes(jpeg(99, 1000, 800))  # 2.4 MB of raw pixels
    return src


@needs_ffcv
def test_image_larger_than_the_base_page_size_is_written(tmp_path, monkeypatch):
    from ffcv.reader import Reader

    from dtrain_prep import ffcv_export

    monkeypatch.setenv(ffcv_export.TEST_HOOK_BASE_PAGE, str(1 << 21))  # FFCV's minimum, < 2.4 MB
    out = tmp_path / "out"
    run_cli("folder", "--src", _big_image_tree(tmp_path), "--out", out, "--ffcv-mode", "raw", *COMMON)
    reader = Reader(str(out / layout.ffcv_name("train")))
    assert reader.num_samples == 5 and reader.page_size >= 1000 * 800 * 3
    assert sorted(zip(reader.metadata["f0"]["width"], reader.metadata["f0"]["height"], strict=True))[-1] == (1000, 800)


@needs_ffcv
def test_dead_ffcv_writer_fails_the_run_at_once_with_its_error(tmp_path, monkeypatch):
    import signal
    import time

    from dtrain_prep import ffcv_export

    monkeypatch.setenv(ffcv_export.TEST_HOOK_PAGE, str(1 << 21))  # too small for big.jpg
    signal.signal(signal.SIGALRM, lambda *args: pytest.fail("the FFCV stage hung"))
    signal.alarm(120)
    try:
        started = time.monotonic()
        line = one_line(run_cli("folder", "--src", _big_image_tree(tmp_path), "--out", tmp_path / "out",
                                "--ffcv-mode", "raw", *COMMON, expect=1))  # a failure, not a user error
    finally:
        signal.alarm(0)
    assert "FFCV writer process" in line and "Tried allocating" in line
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out" / layout.ffcv_name("train")).exists()


# 8. verify reads the stored image bytes of the .beton -------------------------------------------------

@needs_ffcv
def test_jpg_beton_stores_the_validated_shard_bytes_and_verify_catches_a_flipped_bit(tmp_path):
    from ffcv.reader import Reader

    src = make_tree(tmp_path / "src", per_class=3)
    out = tmp_path / "out"
    run_cli("folder", "--src", src, "--out", out, *COMMON)
    rows = [r for r in manifest(out) if r["status"] != layout.STATUS_REJECTED]
    digests = np.frombuffer((out / layout.ffcv_digest_name("train")).read_bytes(), "<u1").reshape(-1, 32)
    assert [d.tobytes().hex() for d in digests] == [r["sha256"] for r in rows]  # no decode, no re-encode
    assert "OK" in run_cli("verify", out).output
    reader = Reader(str(out / layout.ffcv_name("train")))
    entry = next(e for e in reader.alloc_table if int(e["sample_id"]) == 4)
    beton = out / layout.ffcv_name("train")
    data = bytearray(beton.read_bytes())
    data[int(entry["ptr"]) + int(entry["size"]) // 2] ^= 0x01
    beton.write_bytes(bytes(data))
    line = one_line(run_cli("verify", out, expect=1))
    assert "sample 4" in line and "checksum" in line


def test_no_ffcv_import_when_formats_leave_it_out(tmp_path):
    import subprocess
    import sys

    src = make_tree(tmp_path / "src", per_class=1)
    command = [sys.executable, "-X", "importtime", "-m", "dtrain", "prepare", "folder", "--src", str(src),
               "--out", str(tmp_path / "out"), "--quiet", "--workers", "1", "--formats", "wds,filelist"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "dtrain_prep" in imported and not imported & {"ffcv", "numba", "cv2"}


@needs_ffcv
@pytest.mark.slow
def test_ffcv_stage_in_a_fresh_process_writes_the_beton_and_reports_a_dead_writer(tmp_path, monkeypatch):
    from ffcv.reader import Reader

    from dtrain_prep import ffcv_export, pipeline

    monkeypatch.setattr(pipeline, "FRESH_FFCV_PROCESS_MIN_IMAGES", 0)
    src = _big_image_tree(tmp_path)
    run_cli("folder", "--src", src, "--out", tmp_path / "ok", "--ffcv-mode", "raw", *COMMON)
    assert Reader(str(tmp_path / "ok" / layout.ffcv_name("train"))).num_samples == 5
    monkeypatch.setenv(ffcv_export.TEST_HOOK_PAGE, str(1 << 21))
    line = one_line(run_cli("folder", "--src", src, "--out", tmp_path / "bad", "--ffcv-mode", "raw", *COMMON,
                            expect=1))
    assert "Tried allocating" in line
