"""`dtrain prepare` stores R1's per-pixel mean with the dataset (images of one size: at that size;
mixed sizes: at the 224 input geometry) and can carve a seeded minival."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from prepared_data import write_prepared

from dtrain.config import DataConfig
from dtrain.data import build_eval_loader
from dtrain.data.sources import ManifestSource, read_manifest
from dtrain.errors import ConfigError
from dtrain.resolve import load_config
from dtrain_prep import layout
from dtrain_prep.cli import prepare
from dtrain_prep.minival import carve_minival
from dtrain_prep.pixel_stats import PER_PIXEL_MEAN, PIXEL_STATS

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
    no_mean = write_prepared(tmp_path / "no-mean")  # a dataset prepared before mean images existed
    data = DataConfig(root=str(no_mean), normalize="per_pixel_mean")
    with pytest.raises(ConfigError, match="data.normalize=channel"):
        build_eval_loader(data, mode="center", batch_size=2, rank=0, world_size=1)


def _centre_views(root, split: str = "train") -> np.ndarray:
    """What the loaders feed a 224 network from each image: shorter side 256, centre 224 crop."""
    data = DataConfig(root=str(root), normalize="channel", mean=[0.0] * 3, std=[1.0] * 3, val_split=split,
                      val_resize=256, val_crop=224, workers=0)
    loader = build_eval_loader(data, mode="center", batch_size=4, rank=0, world_size=1)
    return np.concatenate([b.views[0].double().numpy()[b.valid.numpy()] for b in loader]).transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory):
    """`dtrain prepare folder` of ImageNet-like images of several sizes, in shards of 4 (shards whose
    first images differ in size meet in the parent)."""
    from PIL import Image

    base = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(1)
    sizes = [(300, 260), (260, 300), (400, 257), (257, 257), (180, 120), (500, 375)]
    for i in range(22):
        width, height = sizes[(i * 5) % len(sizes)]
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 40 * (i % 6))], axis=-1)
        pixels = np.clip(pixels + rng.integers(-25, 26, size=pixels.shape), 0, 255).astype(np.uint8)
        folder = base / "src" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=92)
    out = base / "out"
    result = CliRunner().invoke(prepare, ["folder", "--src", str(base / "src"), "--out", str(out), "--formats", "wds",
                                          "--workers", "1", "--shard-size", "4", "--quiet", "--minival", "3"])
    assert result.exit_code == 0, result.output
    return out


def test_mixed_sizes_get_r1s_mean_image_at_the_networks_input_geometry(mixed_sizes):
    # R1 sec. 3.4 subtracts "the per-pixel mean" on ImageNet too: over images of many sizes it is
    # taken at the 224 input, each image's centre 224 crop of its shorter side resized to 256
    import json

    views = _centre_views(mixed_sizes)
    stored = np.load(mixed_sizes / PER_PIXEL_MEAN)
    assert stored.shape == (224, 224, 3) and len(views) == 19  # 22 images, 3 carved out into minival
    gap = np.abs(stored - views.mean(axis=0))
    # images of a shard's first size are resized as one sum (no 8-bit rounding per image): within a
    # level per image, averaging out
    assert gap.max() < 1.0 / 255 and gap.mean() < 0.1 / 255
    record = json.loads((mixed_sizes / PIXEL_STATS).read_text())
    assert record["geometry"] == "centre 224 of shorter side 256" and record["images"] == 19
    assert record["channel_std"] is None
    assert np.allclose(record["channel_mean"], views.reshape(-1, 3).mean(axis=0), atol=1e-3)


def test_imagenet_training_can_subtract_the_mean_image(mixed_sizes):
    from dtrain.data import build_train_loader

    data = DataConfig(root=str(mixed_sizes), normalize="per_pixel_mean", mean=[0.0] * 3, std=[1.0] * 3,
                      val_split="train", val_resize=256, val_crop=224, crop_size=224, workers=0, lighting_std=0.0)
    centred = _centre_views(mixed_sizes) - np.load(mixed_sizes / PER_PIXEL_MEAN)
    loader = build_eval_loader(data, mode="center", batch_size=4, rank=0, world_size=1)
    got = np.concatenate([b.views[0].double().numpy()[b.valid.numpy()] for b in loader]).transpose(0, 2, 3, 1)
    assert np.allclose(got, centred, atol=1e-5)  # the 224 view minus the 224 mean image, position by position
    train = build_train_loader(data, batch_size=4, rank=0, world_size=1, seed=0)  # R1's scale jitter crops
    images, _ = next(iter(train))
    assert images.shape == (4, 3, 224, 224) and images.abs().mean() < 0.5


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


def test_sums_of_different_sizes_meet_at_the_view_geometry_in_any_order():
    from dtrain_prep.pixel_stats import PixelSums, centre_view

    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, size=shape, dtype=np.uint8)
              for shape in [(260, 300, 3)] * 3 + [(300, 400, 3)] * 3 + [(256, 256, 3)] * 2]
    direct = np.mean([centre_view(image).astype(np.float64) for image in images], axis=0) / 255
    results = []
    for order in (range(8), reversed(range(8))):
        shards = [PixelSums() for _ in range(3)]
        for n, i in enumerate(order):
            shards[n % 3].add(images[i])
        merged = PixelSums()
        for shard in shards:
            merged.merge(shard)
        results.append(merged.result())
    for stats in results:
        assert stats["count"] == 8 and stats["mean_image"].shape == (224, 224, 3)
        assert np.abs(stats["mean_image"] - direct).max() < 1.0 / 255  # within a level of the views' mean
    assert not PixelSums().mixed_sizes  # a shard worker never stops summing


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
