"""`dtrain prepare verify` checks every byte a loader reads (issue #25): a changed label member, a
corrupt tar header or a wrong size in the wds2idx index is exit 1 with one line naming the file."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest
from prepare_trees import COMMON, make_tree, manifest, one_line, run_cli

from dtrain_prep import layout


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    out = root / "out"
    run_cli("folder", "--src", make_tree(root / "src"), "--out", out, "--formats", "wds,filelist", *COMMON)
    assert "OK" in run_cli("verify", out).output
    return out


def _flip_cls(out, row) -> str:
    """The .cls payload (ASCII label) sits a data block and the JPEG's header before the JPEG."""
    shard = out / row["shard"]
    data = bytearray(shard.read_bytes())
    at = row["offset"] - 2 * tarfile.BLOCKSIZE
    assert data[at:at + 1] == str(row["label"]).encode()
    data[at] = ord(str((row["label"] + 1) % 10))  # a valid label, disagreeing with .lbl and the manifest
    shard.write_bytes(bytes(data))
    return row["shard"]


def _flip_header(out, row) -> str:
    shard = out / row["shard"]
    data = bytearray(shard.read_bytes())
    data[row["offset"] - tarfile.BLOCKSIZE + 101] ^= 0x01  # the JPEG header's mode field
    shard.write_bytes(bytes(data))
    return row["shard"]


def _flip_index_size(out, row) -> str:
    index = out / layout.index_name(row["shard"])
    lines = index.read_text().splitlines()
    fields = lines[1].split()
    jpg = fields.index(layout.EXT_JPEG)
    fields[jpg + 2] = str(int(fields[jpg + 2]) + 1)  # the JPEG's size, as DALI reads it
    index.write_text("\n".join([lines[0], " ".join(fields), *lines[2:]]) + "\n")
    return index.name


@pytest.mark.parametrize("corrupt", [_flip_cls, _flip_header, _flip_index_size], ids=["cls", "header", "idx"])
def test_verify_catches_each_kind_of_changed_byte(prepared, tmp_path, corrupt):
    out = tmp_path / "out"
    shutil.copytree(prepared, out, symlinks=True)
    row = next(r for r in manifest(out) if r["status"] != layout.STATUS_REJECTED)
    named = corrupt(out, row)
    line = one_line(run_cli("verify", out, expect=1))
    assert "verify failed" in line and named.rsplit("/", 1)[-1] in line


def _member_count(shard: Path) -> int:
    with tarfile.open(shard) as tar:
        return len(tar.getmembers())


def test_corrupt_headers_that_tarfile_rejects_or_silently_stops_at_are_caught(prepared, tmp_path):
    """A bad first header: tarfile raises "bad checksum". A bad later one: tarfile ends the archive
    there without a word, so a reader would lose every later sample."""
    out = tmp_path / "out"
    shutil.copytree(prepared, out, symlinks=True)
    first_shard = layout.shard_name("train", 0)
    rows = sorted((r for r in manifest(out) if r["shard"] == first_shard), key=lambda r: r["offset"])
    shard = out / first_shard
    members = _member_count(shard)
    _flip_header(out, rows[1])
    assert _member_count(shard) < members
    assert "corrupt header" in one_line(run_cli("verify", out, expect=1))
    data = bytearray(shard.read_bytes())
    data[101] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(tarfile.ReadError, match="checksum"):
        _member_count(shard)
    assert "at byte 0" in one_line(run_cli("verify", out, expect=1))
