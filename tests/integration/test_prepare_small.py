"""`dtrain prepare digits|cifar10|cifar100|synthetic|folder` through the CLI, read back with DALI and PIL."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from dtrain_prep import fixtures, layout
from dtrain_prep.cli import prepare


def run_cli(*args, expect: int = 0):
    result = CliRunner().invoke(prepare, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def stored_pixels(out, row) -> np.ndarray:
    with open(out / row["shard"], "rb") as handle:
        handle.seek(row["offset"])
        return np.asarray(Image.open(io.BytesIO(handle.read(row["bytes"]))).convert("RGB"))


def test_dtrain_cli_lists_the_prepare_subcommands():
    from dtrain.cli import cli

    result = CliRunner().invoke(cli, ["prepare", "--help"])
    assert result.exit_code == 0, result.output
    for name in ("imagenet", "folder", "digits", "cifar10", "cifar100", "synthetic", "verify"):
        assert name in result.output


def test_digits_end_to_end_read_by_dali(tmp_path):
    out = tmp_path / "digits"
    run_cli("digits", "--out", out, "--formats", "wds,filelist", "--workers", 1, "--quiet")
    summary = json.loads((out / layout.SUMMARY).read_text())
    assert summary["splits"]["train"]["accepted"] + summary["splits"]["val"]["accepted"] == 1797
    assert summary["splits"]["val"]["rejected"] == 0
    assert set(summary["per_class"]["train"]) == {str(i) for i in range(10)}
    rows = [r for r in pq.read_table(out / layout.MANIFEST).to_pylist() if r["split"] == "val"]
    assert {(r["width"], r["height"]) for r in rows} == {(32, 32)}

    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def, types

    shards = [str(p) for p in layout.shard_paths(out, "val")]

    @pipeline_def(batch_size=64, num_threads=1, device_id=None)
    def pipeline():
        jpegs, labels = fn.readers.webdataset(paths=shards, index_paths=[layout.index_name(s) for s in shards],
                                              ext=["jpg", "lbl"], dtypes=[types.UINT8, types.INT32],
                                              name="reader", pad_last_batch=True)
        return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB), labels

    pipe = pipeline()
    pipe.build()
    labels, first_image = [], None
    while len(labels) < len(rows):
        images, batch = pipe.run()
        first_image = images.at(0) if first_image is None else first_image
        labels.extend(int(batch.at(i)[0]) for i in range(len(batch)))
    assert labels[: len(rows)] == [r["label"] for r in rows]
    # A real digit scan: dark background, bright strokes, grey replicated in R, G and B.
    assert first_image.shape == (32, 32, 3) and first_image.max() > 150 and np.median(first_image) < 60
    assert np.abs(first_image[..., 0].astype(int) - first_image[..., 2]).max() <= 8
    assert "OK" in run_cli("verify", out).output


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_archive_round_trips_pixels_and_labels(tmp_path, variant):
    archive = tmp_path / f"{variant}-python.tar.gz"
    contents = fixtures.build_cifar_archive(archive, variant, per_batch=6)
    out = tmp_path / "out"
    run_cli(variant, "--src", archive, "--out", out, "--formats", "wds", "--workers", 1, "--quiet")
    rows = pq.read_table(out / layout.MANIFEST).to_pylist()
    test_name = "test_batch" if variant == "cifar10" else "test"
    val = [r for r in rows if r["split"] == "val"]
    assert [r["label"] for r in val] == contents[test_name][1]
    original = contents[test_name][0][0].reshape(3, 32, 32).transpose(1, 2, 0).astype(float)
    # Uniform noise is the worst case for JPEG; real photos fare far better at quality 95, 4:4:4.
    assert np.abs(stored_pixels(out, val[0]) - original).mean() < 12
    classes = json.loads((out / layout.CLASSES).read_text())
    assert len(classes) == (10 if variant == "cifar10" else 100)


def test_synthetic_writes_the_requested_count_and_size(tmp_path):
    out = tmp_path / "syn"
    run_cli("synthetic", "--count", 12, "--val-count", 4, "--width", 40, "--height", 30, "--num-classes", 3,
            "--out", out, "--formats", "wds", "--workers", 1, "--shard-size", 5, "--quiet")
    rows = pq.read_table(out / layout.MANIFEST).to_pylist()
    assert [(r["split"], r["label"]) for r in rows] == [("train", i % 3) for i in range(12)] + \
        [("val", i % 3) for i in range(4)]
    assert stored_pixels(out, rows[0]).shape == (30, 40, 3)
    assert len(layout.shard_paths(out, "train")) == 3


def test_folder_with_holdout_and_resize(tmp_path):
    fixtures.build_imagenet_tree(tmp_path / "raw", per_class=5, odd_files=False)
    out = tmp_path / "out"
    run_cli("folder", "--src", tmp_path / "raw" / "train", "--val-fraction", 0.2, "--max-side", 32,
            "--out", out, "--formats", "wds,filelist", "--workers", 1, "--quiet")
    rows = pq.read_table(out / layout.MANIFEST).to_pylist()
    assert sum(r["split"] == "val" for r in rows) == 3 and sum(r["split"] == "train" for r in rows) == 12
    assert {(r["width"], r["height"], r["status"]) for r in rows} == {(32, 24, "converted")}
    assert all(r["jpeg_path"].startswith("jpeg/") for r in rows)  # resized: copies, not the originals
    assert "OK" in run_cli("verify", out).output
