"""`dtrain prepare imagenet` end to end on a tiny ImageNet tree with planted bad files.

The outputs are read back with the real readers: pyarrow, DALI on CPU (device_id=None), FFCV.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from dtrain_prep import fixtures, layout
from dtrain_prep.cli import prepare
from dtrain_prep.pipeline import TEST_HOOK_EXIT_AFTER_SHARDS

SHARD_SIZE = 5
COMMON = ["--shard-size", str(SHARD_SIZE), "--quiet"]


def run_cli(*args: str, expect: int = 0):
    result = CliRunner().invoke(prepare, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    facts = fixtures.build_imagenet_tree(root / "tree")
    fixtures.build_imagenet_tars(root / "tree", root / "tars")
    return root, facts


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    """The tree form, every format, two worker processes."""
    out = tmp_path_factory.mktemp("out") / "imagenet"
    run_cli("imagenet", "--src", raw[0] / "tree", "--out", out, "--workers", 2, *COMMON)
    return out


@pytest.fixture(scope="module")
def manifest(prepared):
    return pq.read_table(prepared / layout.MANIFEST).to_pylist()


def accepted(manifest, split):
    return [r for r in manifest if r["split"] == split and r["status"] != "rejected"]


def test_manifest_counts_labels_and_rejects(raw, prepared, manifest):
    root, facts = raw
    assert pq.read_schema(prepared / layout.MANIFEST).names == list(layout.MANIFEST_COLUMNS)
    assert len(accepted(manifest, "train")) == facts.train_good
    assert len(accepted(manifest, "val")) == facts.val_good
    rejected = {r["source"]: r["reason"] for r in manifest if r["status"] == "rejected"}
    assert set(rejected) == set(facts.rejected)
    assert all(rejected.values())
    converted = {r["source"] for r in manifest if r["status"] == "converted"}
    assert converted == set(facts.converted)
    label_of = {s: i for i, s in enumerate(sorted(fixtures.SYNSETS))}
    for row in accepted(manifest, "train") + accepted(manifest, "val"):
        assert row["label"] == label_of[row["synset"]]
    val_synsets = {r["source"].split("/")[-1]: r["synset"] for r in accepted(manifest, "val")}
    assert val_synsets == facts.val_labels
    for split in ("train", "val"):
        assert [r["index"] for r in accepted(manifest, split)] == list(range(len(accepted(manifest, split))))

    summary = json.loads((prepared / layout.SUMMARY).read_text())
    assert summary["complete"] is True and list(summary)[-1] == "complete"
    assert {r["source"] for r in summary["rejects"]} == set(facts.rejected)
    assert all((prepared / r["quarantine"]).exists() for r in summary["rejects"] if r["quarantine"])
    assert summary["splits"]["train"]["rejected"] == len(facts.rejected)
    classes = json.loads((prepared / layout.CLASSES).read_text())
    assert [(c["index"], c["synset"]) for c in classes] == list(enumerate(sorted(fixtures.SYNSETS)))
    assert classes[0]["name"] == "tench"


def _dali_read(pipeline_fn, reader_name="reader"):
    pipe = pipeline_fn()
    pipe.build()
    total = pipe.epoch_size(reader_name)
    labels, shapes = [], []
    while len(labels) < total:
        images, batch_labels = pipe.run()
        for i in range(len(batch_labels)):
            if len(labels) < total:
                labels.append(int(batch_labels.at(i).reshape(-1)[0]))
                shapes.append(tuple(images.at(i).shape))
    return labels, shapes


@pytest.mark.parametrize("split", ["train", "val"])
def test_dali_webdataset_reader_on_cpu_yields_manifest_order(prepared, manifest, split):
    dali = pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def, types

    shards = [str(p) for p in layout.shard_paths(prepared, split)]

    @pipeline_def(batch_size=4, num_threads=1, device_id=None)
    def pipeline():
        jpegs, labels = fn.readers.webdataset(
            paths=shards, index_paths=[layout.index_name(s) for s in shards], ext=["jpg", "lbl"],
            dtypes=[types.UINT8, types.INT32], name="reader", pad_last_batch=True)
        return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB), labels

    assert dali is not None
    labels, shapes = _dali_read(pipeline)
    rows = accepted(manifest, split)
    assert labels == [r["label"] for r in rows]
    assert shapes == [(r["height"], r["width"], 3) for r in rows]


def test_dali_file_reader_reads_the_filelist(prepared, manifest):
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=4, num_threads=1, device_id=None)
    def pipeline():
        jpegs, labels = fn.readers.file(file_root=str(prepared),
                                        file_list=str(prepared / layout.filelist_name("train")),
                                        name="reader", pad_last_batch=True)
        return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB), labels

    labels, shapes = _dali_read(pipeline)
    rows = accepted(manifest, "train")
    assert labels == [r["label"] for r in rows]
    assert shapes == [(r["height"], r["width"], 3) for r in rows]


def test_ffcv_loader_reads_the_betons(prepared, manifest):
    pytest.importorskip("ffcv")
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption

    for split in ("train", "val"):
        # Images differ in size only through conversions here (all 64x48), so batches stack.
        loader = Loader(str(prepared / layout.ffcv_name(split)), batch_size=8, num_workers=1,
                        order=OrderOption.SEQUENTIAL, drop_last=False,
                        pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]})
        labels, shapes = [], []
        for images, batch_labels in loader:
            labels.extend(int(v) for v in batch_labels.reshape(-1))
            shapes.extend(tuple(image.shape) for image in images)
        rows = accepted(manifest, split)
        assert labels == [r["label"] for r in rows]
        assert shapes == [(r["height"], r["width"], 3) for r in rows]


@pytest.fixture(scope="module")
def from_tars(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "from_tars"
    run_cli("imagenet", "--src", raw[0] / "tars", "--out", out, "--workers", 1, "--formats", "wds,filelist", *COMMON)
    return out


def test_tar_form_writes_the_same_shards_as_the_tree(prepared, from_tars, manifest):
    for split in ("train", "val"):
        tree_shards = layout.shard_paths(prepared, split)
        assert [p.name for p in tree_shards] == [p.name for p in layout.shard_paths(from_tars, split)]
        for shard in tree_shards:
            assert shard.read_bytes() == (from_tars / shard.relative_to(prepared)).read_bytes()
    tar_rows = pq.read_table(from_tars / layout.MANIFEST).to_pylist()
    keep = [c for c in layout.MANIFEST_COLUMNS if c not in ("source", "jpeg_path")]
    assert [{c: r[c] for c in keep} for r in tar_rows] == [{c: r[c] for c in keep} for r in manifest]
    assert tar_rows[0]["source"].startswith("ILSVRC2012_img_train.tar::n01440764.tar/")


def test_verify_passes_then_catches_a_changed_byte(prepared, from_tars):
    assert "OK" in run_cli("verify", prepared).output
    assert "OK" in run_cli("verify", from_tars).output
    row = accepted(pq.read_table(from_tars / layout.MANIFEST).to_pylist(), "train")[3]
    shard = from_tars / row["shard"]
    data = bytearray(shard.read_bytes())
    data[row["offset"] + 100] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = CliRunner().invoke(prepare, ["verify", str(from_tars)])
    assert result.exit_code == 1 and "checksum" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_rerun_is_a_noop_unless_overwrite(raw, prepared):
    before = (prepared / layout.MANIFEST).stat().st_mtime_ns
    result = run_cli("imagenet", "--src", raw[0] / "tree", "--out", prepared, *COMMON[:2])
    assert "already complete" in result.output and "--overwrite" in result.output
    assert (prepared / layout.MANIFEST).stat().st_mtime_ns == before


def test_kill_and_resume_equals_the_uninterrupted_run(raw, prepared, manifest, tmp_path):
    out = tmp_path / "resumed"
    command = [sys.executable, "-m", "dtrain", "prepare", "imagenet", "--src", str(raw[0] / "tree"),
               "--out", str(out), "--workers", "2", "--formats", "wds,filelist", *COMMON]
    killed = subprocess.run(command, env={**os.environ, TEST_HOOK_EXIT_AFTER_SHARDS: "3"}, capture_output=True)
    assert killed.returncode == 17, killed.stderr.decode()[-2000:]
    assert not (out / layout.SUMMARY).exists()
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for split in ("train", "val"):
        shards = layout.shard_paths(prepared, split)
        assert [p.name for p in layout.shard_paths(out, split)] == [p.name for p in shards]
        for shard in shards:
            assert (out / shard.relative_to(prepared)).read_bytes() == shard.read_bytes()
            idx = Path(layout.index_name(str(shard)))
            assert (out / idx.relative_to(prepared)).read_bytes() == idx.read_bytes()
    assert pq.read_table(out / layout.MANIFEST).to_pylist() == manifest
    assert not list(out.rglob("*.tmp*"))
    for split in ("train", "val"):
        assert (out / layout.filelist_name(split)).read_text() == (prepared / layout.filelist_name(split)).read_text()


def test_non_empty_foreign_out_asks_for_overwrite(raw, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = run_cli("imagenet", "--src", raw[0] / "tree", "--out", tmp_path, *COMMON, expect=2)
    assert "--overwrite" in result.output and len(result.output.strip().splitlines()) == 1


def test_wrong_src_is_one_line(tmp_path):
    result = run_cli("imagenet", "--src", tmp_path / "nope", "--out", tmp_path / "o", *COMMON, expect=2)
    assert "does not exist" in result.output and len(result.output.strip().splitlines()) == 1


def test_disk_full_is_a_clean_message_and_leaves_no_partial_shard(raw, tmp_path, monkeypatch):
    from dtrain_prep import shard_writer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shard_writer, "_tar_member", full)
    out = tmp_path / "o"
    result = run_cli("imagenet", "--src", raw[0] / "tree", "--out", out, "--workers", 1, "--formats", "wds",
                     *COMMON, expect=2)
    assert "disk full" in result.output and "resume" in result.output
    assert not list(out.rglob("*.tmp*")) and not list(out.rglob("*.tar"))


def test_resuming_with_other_options_is_refused(raw, tmp_path):
    out = tmp_path / "o"
    run_cli("imagenet", "--src", raw[0] / "tree", "--out", out, "--workers", 1, "--formats", "wds", *COMMON)
    (out / layout.SUMMARY).unlink()  # as if the run had been killed before finishing
    result = run_cli("imagenet", "--src", raw[0] / "tree", "--out", out, "--workers", 1, "--formats", "wds",
                     "--shard-size", 7, "--quiet", expect=2)
    assert "unfinished run" in result.output and "--overwrite" in result.output
