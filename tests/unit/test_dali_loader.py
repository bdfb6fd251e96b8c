"""The DALI loaders on CPU (device_id=None) over the tiny prepared layout: contract, coverage, errors."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")

from prepared_data import write_prepared

from dtrain.config import DataConfig  # noqa: E402
from dtrain.data import build_eval_loader, build_train_loader  # noqa: E402
from dtrain.data.sources import read_manifest  # noqa: E402
from dtrain.errors import ConfigError  # noqa: E402
from dtrain_prep import layout  # noqa: E402

SMALL = dict(loader="dali", source="files", crop_size=24, scale_range=[32, 40], val_resize=32, val_crop=24,
             workers=1)


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("dali", counts={"train": 26, "val": 7})


@pytest.mark.parametrize("augment", ["random_resized_crop", "scale_jitter", "none"])
def test_two_ranks_read_each_used_sample_once_per_epoch(prepared, augment):
    data = DataConfig(root=str(prepared), train_augment=augment, **SMALL)
    labels = read_manifest(prepared, "train").labels
    loaders = [build_train_loader(data, batch_size=4, rank=r, world_size=2, seed=3, device="cpu") for r in (0, 1)]
    assert [len(x) for x in loaders] == [26 // 8, 26 // 8]  # the reference loader's count
    for epoch in range(2):
        seen = []
        for loader in loaders:
            loader.set_epoch(epoch)
            for images, batch_labels, indices in loader.iter_with_indices():
                assert images.shape == (4, 3, 24, 24) and images.dtype == torch.float32
                assert batch_labels.dtype == torch.int64
                assert batch_labels.tolist() == labels[indices.numpy()].tolist()
                seen += indices.tolist()
        assert len(seen) == len(set(seen)) == 3 * 8  # no duplicates, no drops beyond the last global batch


def test_abandoned_epoch_and_skip_batches_keep_epoch_boundaries(prepared):
    data = DataConfig(root=str(prepared), train_augment="none", **SMALL)
    loader = build_train_loader(data, batch_size=4, rank=0, world_size=1, seed=0, device="cpu")
    assert len(loader) == 6
    next(iter(loader))  # the engine stops iterating mid-epoch when it reaches its step count
    loader.set_epoch(1, skip_batches=2)
    assert len(list(loader)) == 4
    loader.set_epoch(2)
    indices = torch.cat([i for _, _, i in loader.iter_with_indices()])
    assert len(set(indices.tolist())) == 24


def test_lighting_and_flip_keep_image_statistics(prepared):
    plain = DataConfig(root=str(prepared), train_augment="none", flip=False, lighting_std=0.0,
                       mean=[0.0] * 3, std=[1.0] * 3, **SMALL)
    lit = DataConfig(root=str(prepared), train_augment="none", flip=True, lighting_std=0.1,
                     mean=[0.0] * 3, std=[1.0] * 3, **SMALL)
    a = torch.cat([x for x, _ in build_train_loader(plain, batch_size=8, rank=0, world_size=1, seed=0, device="cpu")])
    b = torch.cat([x for x, _ in build_train_loader(lit, batch_size=8, rank=0, world_size=1, seed=0, device="cpu")])
    assert a.min() >= 0.0 and a.max() <= 1.0  # 0..255 pixels over 255
    assert (a.mean(dim=(0, 2, 3)) - b.mean(dim=(0, 2, 3))).abs().max() < 0.05  # lighting is zero-mean
    assert not torch.allclose(a.mean(dim=(0, 2, 3)), b.mean(dim=(0, 2, 3)), atol=1e-5)


@pytest.mark.parametrize("mode,views,side", [("center", 1, 24), ("ten-crop", 10, 24)])
def test_eval_counts_every_sample_once_over_two_ranks(prepared, mode, views, side):
    data = DataConfig(root=str(prepared), **SMALL)
    counted = Counter()
    batches = []
    for rank in (0, 1):
        loader = build_eval_loader(data, mode=mode, batch_size=2, rank=rank, world_size=2, device="cpu")
        assert loader.num_samples == 7
        batches.append(len(list(loader)))
        for batch in loader:
            assert len(batch.views) == views and batch.views[0].shape[1:] == (3, side, side)
            counted.update(batch.labels[batch.valid].tolist())
    assert batches[0] == batches[1] == 2  # shards of 3 and 4 samples, batch 2: same count on both ranks
    assert counted == Counter(read_manifest(prepared, "val").labels.tolist())


def test_multi_scale_falls_back_to_the_torch_loader(prepared, capsys):
    from dtrain.data.loaders import EvalLoader

    loader = build_eval_loader(DataConfig(root=str(prepared), **SMALL), mode="multi-scale", batch_size=2, rank=0,
                               world_size=1, scales=[32], device="cpu")
    assert isinstance(loader, EvalLoader)
    assert "data.loader=dali has no eval.mode=multi-scale" in capsys.readouterr().err


def test_per_pixel_mean_is_refused_with_the_fix(prepared):
    with pytest.raises(ConfigError, match="data.normalize=channel"):
        build_train_loader(DataConfig(root=str(prepared), normalize="per_pixel_mean", **SMALL), batch_size=2,
                           rank=0, world_size=1, seed=0, device="cpu")


def test_class_sorted_shards_are_refused_for_training(tmp_path):
    out = write_prepared(tmp_path)
    table = pq.read_table(out / layout.MANIFEST).sort_by([("split", "ascending"), ("index", "ascending")])
    rows = table.to_pylist()
    ordered = sorted(r["label"] for r in rows if r["split"] == "train" and r["index"] >= 0)
    for row in rows:
        if row["split"] == "train" and row["index"] >= 0:
            row["label"] = ordered[row["index"]]
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), out / layout.MANIFEST)
    data = DataConfig(root=str(out), **(SMALL | {"source": "shards"}))
    with pytest.raises(ConfigError, match="data.source=files"):
        build_train_loader(data, batch_size=4, rank=0, world_size=1, seed=0, device="cpu")


@pytest.mark.parametrize("spec", ["ta_wide", "ra-m9-n2"])
@pytest.mark.parametrize("augment", ["random_resized_crop", "scale_jitter"])
def test_auto_augment_runs_in_the_cpu_pipeline(prepared, spec, augment):
    raw = dict(root=str(prepared), train_augment=augment, flip=False, lighting_std=0.0, mean=[0.0] * 3,
               std=[1.0] * 3, **SMALL)
    plain = torch.cat([x for x, _ in build_train_loader(DataConfig(**raw), batch_size=8, rank=0, world_size=1,
                                                        seed=0, device="cpu")])
    loader = build_train_loader(DataConfig(**raw, auto_augment=spec), batch_size=8, rank=0, world_size=1, seed=0,
                                device="cpu")
    augmented = torch.cat([x for x, _ in loader])
    assert augmented.shape == plain.shape == (24, 3, 24, 24)
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0
    assert not torch.equal(augmented, plain)  # the ops are applied


def test_auto_augment_with_pad_crop_is_refused_in_one_line(prepared):
    data = DataConfig(root=str(prepared), train_augment="pad_crop", auto_augment="ta_wide", **SMALL)
    with pytest.raises(ConfigError, match="not available with data.loader=dali .*use data.loader=torch$"):
        build_train_loader(data, batch_size=4, rank=0, world_size=1, seed=0, device="cpu")


def test_timm_rand_augment_is_refused_in_one_line(prepared):
    data = DataConfig(root=str(prepared), train_augment="random_resized_crop", auto_augment="rand-m9-mstd0.5", **SMALL)
    with pytest.raises(ConfigError, match="not available with data.loader=dali; use data.loader=torch or synthetic"):
        build_train_loader(data, batch_size=4, rank=0, world_size=1, seed=0, device="cpu")


def test_val_interpolation_resizes_with_dalis_filter_of_that_name(tmp_path):
    """DALI's antialiased resize is not PIL's bit for bit, but each DALI filter lands nearer the torch
    loader's (PIL's) filter of the same name than the other one."""
    root = write_prepared(tmp_path / "data", counts={"train": 4, "val": 7}, sizes=[(97, 71), (80, 120)])

    def views(loader: str, interpolation: str) -> torch.Tensor:
        data = DataConfig(root=str(root), loader=loader, source="files", val_resize=40, val_crop=32, workers=1,
                          mean=[0.0] * 3, std=[1.0] * 3, val_interpolation=interpolation)
        batch = next(iter(build_eval_loader(data, mode="center", batch_size=7, rank=0, world_size=1, device="cpu")))
        return batch.views[0][batch.valid]

    filters = ("bilinear", "bicubic")
    pil = {name: views("torch", name) for name in filters}
    for name in filters:
        dali = views("dali", name)
        distance = {other: (dali - pil[other]).abs().mean().item() for other in filters}
        assert min(distance, key=distance.get) == name, distance
