"""Loader interface, sampling and the prepared-layout reader (dtrain.data)."""

from __future__ import annotations

import io
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from dtrain.config import DataConfig
from dtrain.data import LOADERS, EvalBatch, build_eval_loader, build_train_loader
from dtrain.data.sampling import TrainBatchSampler, eval_assignment
from dtrain.data.sources import ManifestSource, read_manifest
from dtrain.errors import ConfigError, DtrainError
from dtrain_prep import layout

SMALL = dict(scale_range=[32, 40], crop_size=24, val_resize=32, val_crop=24)


def _train(data: DataConfig, **kw):
    args = dict(batch_size=4, rank=0, world_size=1, seed=7, device="cpu") | kw
    return build_train_loader(data, **args)


def _epoch(loader, epoch: int, skip: int = 0):
    loader.set_epoch(epoch, skip)
    return [(images.clone(), labels.clone()) for images, labels in loader]


def test_batches_are_bitwise_identical_whatever_workers_and_skip(prepared):
    data = DataConfig(root=str(prepared), workers=0, **SMALL)  # scale_jitter + lighting + flip
    single = _epoch(_train(data), epoch=1)
    loader = _train(DataConfig(root=str(prepared), workers=2, **SMALL))
    assert len(loader) == len(single) == 24 // 4
    resumed = _epoch(loader, epoch=1, skip=2)
    assert len(resumed) == len(single) - 2
    for (a_img, a_lab), (b_img, b_lab) in zip(single[2:], resumed, strict=True):
        assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    assert single[0][0].shape == (4, 3, 24, 24) and single[0][0].dtype == torch.float32
    assert single[0][1].dtype == torch.int64
    # A new epoch is a new order and new augmentations; the same epoch again is the same.
    other = _epoch(loader, epoch=2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(single, other, strict=True))
    assert torch.equal(_epoch(loader, epoch=1)[3][0], single[3][0])


def test_two_ranks_cover_each_used_sample_once_per_epoch():
    # synthetic labels are index % num_classes: with 1000 classes they name the sample
    data = DataConfig(loader="synthetic", synthetic_samples=23, synthetic_image_size=8, train_augment="pad_crop",
                      crop_size=8, pad=1, workers=0)
    loaders = [_train(data, batch_size=3, rank=r, world_size=2) for r in (0, 1)]
    assert len(loaders[0]) == len(loaders[1]) == 23 // 6
    seen = []
    for loader in loaders:
        loader.set_epoch(4)
        seen += [label for _, labels in loader for label in labels.tolist()]
    assert len(seen) == len(set(seen)) == 3 * 6  # incomplete last global batch dropped, no overlap


def test_train_sampler_slices_global_batches_by_rank():
    samplers = [TrainBatchSampler(50, batch_size=4, rank=r, world_size=3, seed=1) for r in range(3)]
    for epoch in (0, 1):
        per_rank = []
        for s in samplers:
            s.set_epoch(epoch)
            per_rank.append([[i for _, i in batch] for batch in s])
        assert {len(batches) for batches in per_rank} == {50 // 12}
        for b in range(4):  # global batch b = rank 0's, then rank 1's, then rank 2's slice
            global_batch = sum((per_rank[r][b] for r in range(3)), [])
            assert len(set(global_batch)) == 12
        everything = [i for batches in per_rank for batch in batches for i in batch]
        assert len(everything) == len(set(everything)) == 48


def test_eval_padding_counts_every_real_sample_once():
    data = DataConfig(loader="synthetic", synthetic_samples=7, synthetic_image_size=8, val_resize=8, val_crop=8,
                      workers=0)
    counted, batches = Counter(), []
    for rank in (0, 1):
        loader = build_eval_loader(data, mode="center", batch_size=3, rank=rank, world_size=2, device="cpu",
                                   num_classes=1000)
        assert loader.num_samples == 7
        rank_batches = list(loader)
        batches.append(len(rank_batches))
        for batch in rank_batches:
            assert isinstance(batch, EvalBatch) and batch.views[0].shape[1:] == (3, 8, 8)
            counted.update(batch.labels[batch.valid].tolist())
    assert batches[0] == batches[1] == 2
    assert counted == Counter(range(7))
    assert [v for _, v in eval_assignment(7, 1, 2)] == [True, True, True, False]


def test_shard_offset_read_equals_tarfile_read(prepared):
    manifest = read_manifest(prepared, "val")
    shards, files = ManifestSource(manifest, "shards"), ManifestSource(manifest, "files")
    for index in range(len(manifest)):
        key = layout.sample_key(index)
        with tarfile.open(prepared / manifest.shard(index)) as tar:
            expected = tar.extractfile(f"{key}.{layout.EXT_JPEG}").read()
            label = int(tar.extractfile(f"{key}.{layout.EXT_CLS}").read())
        assert shards.read_bytes(index) == expected == files.read_bytes(index)
        assert shards.label(index) == label
        decoded = np.asarray(shards.image(index))
        assert np.array_equal(decoded, np.asarray(Image.open(io.BytesIO(expected)).convert("RGB")))
        assert decoded.shape[:2] == (manifest.heights[index], manifest.widths[index])


def test_manifest_reader_skips_rejected_rows_and_orders_by_index(prepared):
    manifest = read_manifest(prepared, "train")
    assert len(manifest) == 24  # the rejected row is not a sample
    keys = [layout.sample_key(i) for i in range(24)]
    assert [manifest.jpeg_path(i).rsplit("/", 1)[1] for i in range(24)] == [f"{k}.jpg" for k in keys]


def test_files_and_shards_sources_give_the_same_batches(prepared):
    first = _epoch(_train(DataConfig(root=str(prepared), workers=0, source="files", **SMALL)), 0)
    second = _epoch(_train(DataConfig(root=str(prepared), workers=0, source="shards", **SMALL)), 0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))


def test_eval_modes_on_prepared_data(prepared):
    data = DataConfig(root=str(prepared), workers=0, **SMALL)
    ten = build_eval_loader(data, mode="ten-crop", batch_size=4, rank=0, world_size=1, scales=[], device="cpu")
    batch = next(iter(ten))
    assert len(batch.views) == 10 and batch.views[0].shape == (4, 3, 24, 24)
    # the fixture's images have four different sizes: multi-scale goes one image at a time
    multi = build_eval_loader(data, mode="multi-scale", batch_size=4, rank=0, world_size=1, scales=[24, 36],
                              device="cpu")
    assert len(multi) == 7
    batch = next(iter(multi))
    assert len(batch.views) == 4 and batch.views[2].shape[0] == 1 and min(batch.views[2].shape[2:]) == 36


def test_loader_registry_and_errors(prepared, tmp_path):
    assert {"torch", "synthetic"} <= set(LOADERS)
    with pytest.raises(ConfigError, match="valid loaders: .*synthetic.*torch"):
        _train(DataConfig(loader="nope"))
    with pytest.raises(DtrainError, match="dtrain prepare"):
        _train(DataConfig(root=str(tmp_path)))
    with pytest.raises(DtrainError, match="fewer than one global batch"):
        _train(DataConfig(root=str(prepared), workers=0, **SMALL), batch_size=16, world_size=2)
    with pytest.raises(ConfigError, match="scale_range"):
        _train(DataConfig(root=str(prepared), scale_range=[16, 40], crop_size=24))
    with pytest.raises(DtrainError, match="no accepted samples of split 'test'"):
        _train(DataConfig(root=str(prepared), train_split="test", **SMALL))


def test_synthetic_loader_is_reproducible():
    data = DataConfig(loader="synthetic", synthetic_samples=8, synthetic_image_size=16, train_augment="none",
                      val_resize=16, crop_size=16, lighting_std=0.0, workers=0)
    a = _epoch(_train(data, num_classes=5), 0)
    b = _epoch(_train(data, num_classes=5), 0)
    assert len(a) == 2 and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert int(torch.cat([labels for _, labels in a]).max()) < 5


def test_reads_what_dtrain_prepare_writes(tmp_path):
    """The contract with data_prep: the real writer's shards, offsets and labels."""
    import hashlib

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    prepare = pytest.importorskip("dtrain_prep.cli").prepare
    out = tmp_path / "prepared"
    result = CliRunner().invoke(prepare, [
        "synthetic", "--count", "12", "--val-count", "5", "--width", "40", "--height", "30",
        "--shard-size", "4", "--formats", "wds,filelist", "--workers", "1", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {(r["split"], r["index"]): r for r in pq.read_table(out / layout.MANIFEST).to_pylist()}
    for split, count in (("train", 12), ("val", 5)):
        manifest = read_manifest(out, split)
        assert len(manifest) == count
        source = ManifestSource(manifest, "shards")
        for index in range(count):
            data = source.read_bytes(index)
            assert hashlib.sha256(data).hexdigest() == rows[(split, index)]["sha256"]
            assert source.label(index) == rows[(split, index)]["label"]
    data = DataConfig(root=str(out), workers=0, **SMALL)
    images, labels = next(iter(_train(data, batch_size=4)))
    assert images.shape == (4, 3, 24, 24) and labels.dtype == torch.int64
    evaluator = build_eval_loader(data, mode="center", batch_size=2, rank=1, world_size=2, device="cpu")
    assert evaluator.num_samples == 5 and sum(int(b.valid.sum()) for b in evaluator) == 2


def test_lazy_loader_entry_missing_dependency_is_one_line_error(monkeypatch):
    monkeypatch.setitem(LOADERS, "dali", "dtrain.data.no_such_module:BUILDERS")
    # A module of no extra (a broken install): named as it is, not papered over with an extra.
    with pytest.raises(ConfigError, match=r"^data.loader=dali cannot run in this install \(No module named "
                                          r"'dtrain.data.no_such_module'\); or choose another data.loader$"):
        _train(DataConfig(loader="dali"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu_batches():
    data = DataConfig(loader="synthetic", synthetic_samples=8, synthetic_image_size=16, train_augment="pad_crop",
                      crop_size=16, pad=2, workers=1)
    cpu = _epoch(_train(data), 0)
    gpu = _epoch(_train(data, device="cuda"), 0)
    for (a_img, a_lab), (b_img, b_lab) in zip(cpu, gpu, strict=True):
        assert b_img.is_cuda and b_lab.is_cuda
        assert torch.allclose(a_img, b_img.cpu(), atol=1e-6) and torch.equal(a_lab, b_lab.cpu())


def test_shard_reader_bounds_open_files(prepared, monkeypatch):
    monkeypatch.setattr("dtrain.data.sources.MAX_OPEN_SHARDS", 2)
    manifest = read_manifest(prepared, "train")  # 24 samples in 5 shards
    source = ManifestSource(manifest, "shards")
    first = [source.read_bytes(i) for i in range(len(manifest))]
    assert len(source._fds) == 2
    assert [source.read_bytes(i) for i in reversed(range(len(manifest)))] == first[::-1]
    source.close()


def test_loaders_leave_the_global_torch_rng_alone():
    # a resumed run calls iter() once more than the uninterrupted one: it must not move the stream
    data = DataConfig(loader="synthetic", synthetic_samples=8, synthetic_image_size=8, train_augment="pad_crop",
                      crop_size=8, val_resize=8, val_crop=8, workers=1)
    before = torch.get_rng_state()
    _epoch(_train(data), 0)
    list(build_eval_loader(data, mode="center", batch_size=4, rank=0, world_size=1, device="cpu"))
    assert torch.equal(torch.get_rng_state(), before)
