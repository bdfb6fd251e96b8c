"""`dtrain prepare` stores R1's per-pixel mean with the dataset and can carve a seeded minival."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from dtrain_prep import layout
from dtrain_prep.cli import prepare
from dtrain_prep.minival import carve_minival
from dtrain_prep.pixel_stats import PER_PIXEL_MEAN, PIXEL_STATS, pixel_statistics
from dtrain.config import DataConfig, load_config
from dtrain.data import build_eval_loader
from dtrain.data.sources import ManifestSource, read_manifest
from dtrain.errors import ConfigError
from _prepared_fixture import write_prepared

MINIVAL = 10


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("pixels") / "fixed-size"  # one image size, as CIFAR and the digits
    result = CliRunner().invoke(prepare, ["synthetic", "--count", "60", "--val-count", "8", "--width", "32",
                                          "--height", "32", "--num-classes", "3", "--workers", "1", "--quiet",
                                          "--formats", "wds", "--out", str(out), "--minival", str(MINIVAL)])
    assert result.exit_code == 0, result.output
    return out


def _train_pixels(root) -> np.ndarray:
    source = ManifestSource(read_manifest(root, "train"))
    return np.stack([np.asarray(source.image(i), dtype=np.float64) for i in range(len(source))]) / 255.0


def test_per_pixel_mean_is_numpys_mean_over_the_train_split(prepared):
    pixels = _train_pixels(prepared)
    stored = np.load(prepared / PER_PIXEL_MEAN)
    assert stored.shape == pixels.shape[1:] == (32, 32, 3)
    assert np.allclose(stored, pixels.mean(axis=0), atol=1e-6)
    stats = (prepared / PIXEL_STATS).read_text()
    assert f'"images": {len(pixels)}' in stats


def test_minival_is_a_seeded_slice_of_train_held_out_from_it(prepared):
    table = pq.read_table(prepared / layout.MANIFEST).to_pandas()
    table = table[table.status != layout.STATUS_REJECTED]
    minival, train = table[table.split == "minival"], table[table.split == "train"]
    assert len(minival) == MINIVAL
    assert set(minival.source).isdisjoint(train.source)
    assert sorted(minival["index"]) == list(range(MINIVAL)) and sorted(train["index"]) == list(range(len(train)))
    rows = [{"split": "train", "status": layout.STATUS_OK, "n": i} for i in range(50)]
    chosen = [r["n"] for r in carve_minival([dict(r) for r in rows], 10, seed=3) if r["split"] == "minival"]
    assert chosen == [r["n"] for r in carve_minival([dict(r) for r in rows], 10, seed=3) if r["split"] == "minival"]
    assert chosen != [r["n"] for r in carve_minival([dict(r) for r in rows], 10, seed=4) if r["split"] == "minival"]


def test_per_pixel_normalisation_centres_every_pixel_of_train(prepared):
    data = DataConfig(root=str(prepared), normalize="per_pixel_mean", mean=[0.0] * 3, std=[1.0] * 3, val_split="train",
                      val_resize=32, val_crop=32, workers=0)
    loader = build_eval_loader(data, mode="center", batch_size=256, rank=0, world_size=1)
    total = sum(batch.views[0].double().sum(dim=0) for batch in loader)
    assert torch.allclose(total / loader.num_samples, torch.zeros(3, 32, 32, dtype=torch.float64), atol=1e-5)


def test_r1_cifar_recipes_use_the_per_pixel_mean_and_cifar100_its_own_statistics(tmp_path):
    assert load_config("cifar10_resnet110").data.normalize == "per_pixel_mean"
    assert load_config("cifar100_resnet164").data.mean != load_config("cifar10_resnet164_preact").data.mean
    mixed_sizes = write_prepared(tmp_path / "mixed")  # ImageNet-like: no mean image is stored
    rows = pq.read_table(mixed_sizes / layout.MANIFEST).to_pylist()
    assert pixel_statistics(mixed_sizes, rows) is None  # ImageNet-like sizes: prepare stores no mean image
    data = DataConfig(root=str(mixed_sizes), normalize="per_pixel_mean")
    with pytest.raises(ConfigError, match="data.normalize=channel"):
        build_eval_loader(data, mode="center", batch_size=2, rank=0, world_size=1)


def test_shard_sums_are_exact_in_any_order_and_take_back_a_carved_image():
    from dtrain_prep.pixel_stats import PixelSums

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8) for _ in range(7)]
    images[0][:] = 255  # the largest square: 255**2 must not wrap in the 16-bit scratch
    first, second, everything = PixelSums(), PixelSums(), PixelSums()
    for image in images[:4]:
        first.add(image)
    for image in images[4:]:
        second.add(image)
    for image in images[1:]:
        everything.add(image)
    second.merge(first)
    second.subtract(images[0])
    stacked = np.stack(images[1:]).astype(np.float64) / 255.0
    stats = second.result()
    direct = everything.result()  # the same six images summed in one go: bit-identical, not close
    assert stats["count"] == direct["count"] == 6
    assert all(np.array_equal(stats[key], direct[key]) for key in ("mean_image", "channel_mean", "channel_std"))
    assert np.allclose(stats["mean_image"], stacked.mean(axis=0), atol=1e-12)
    assert np.allclose(stats["channel_std"], stacked.reshape(-1, 3).std(axis=0), atol=1e-12)


def test_shards_of_different_sizes_give_no_mean_image():
    from dtrain_prep.pixel_stats import PixelSums

    small, large = PixelSums(), PixelSums()
    small.add(np.zeros((4, 4, 3), np.uint8))
    large.add(np.zeros((8, 8, 3), np.uint8))
    small.merge(large)
    assert small.result() is None and small.mixed_sizes


def test_a_shard_without_saved_sums_is_decoded_by_the_parent(prepared, tmp_path):
    import shutil

    from dtrain_prep.pixel_stats import PixelAccumulator
    from dtrain_prep.shard_writer import load_fragment, pixel_sums_path

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    saved = pixel_sums_path(copy, "train", 0)
    assert saved.is_file()  # the worker left its sums beside the fragment
    saved.unlink()  # as a shard written by a dtrain before the sums moved into the workers
    rows = pq.read_table(copy / layout.MANIFEST).to_pylist()
    accumulator = PixelAccumulator(copy)
    accumulator.add_shard(saved, [r for r in rows if r["shard"] == load_fragment(copy, "train", 0)[0]["shard"]
                                  or r["split"] == "minival"], "train")
    assert np.allclose(accumulator.result()["mean_image"], np.load(prepared / PER_PIXEL_MEAN), atol=1e-6)
