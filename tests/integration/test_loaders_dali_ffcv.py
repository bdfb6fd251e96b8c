"""DALI and FFCV against the reference torch loader on one dataset written by `dtrain prepare`:
epoch length, exactly-once coverage over 2 ranks, image statistics, a few training steps, eval.

FFCV compiles its pipeline with numba once per Loader (~10 s here), so loaders are shared.
GPU tests (DALI mixed decode, FFCV ToDevice) skip without CUDA.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
pytest.importorskip("ffcv", reason="FFCV is not installed")

from dtrain import models  # noqa: E402
from dtrain.config import DataConfig  # noqa: E402
from dtrain.data import build_eval_loader, build_train_loader  # noqa: E402
from dtrain.data.sampling import TrainBatchSampler  # noqa: E402
from dtrain.data.sources import read_manifest  # noqa: E402
from dtrain_prep.cli import prepare  # noqa: E402

TRAIN, VAL, BATCH, SEED = 70, 15, 8, 5  # 70 // 16 = 4 global batches: 6 samples dropped per epoch
# No random geometry, no normalisation: every loader must give the same pixels up to the JPEG decoder.
PLAIN = dict(train_augment="none", flip=False, lighting_std=0.0, mean=[0.0] * 3, std=[1.0] * 3,
             crop_size=32, val_resize=48, val_crop=32, workers=1)
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("loaders") / "synthetic"
    result = CliRunner().invoke(prepare, ["synthetic", "--count", str(TRAIN), "--val-count", str(VAL), "--width", "64",
                                          "--height", "48", "--num-classes", "4", "--shard-size", "20",
                                          "--workers", "1", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _loaders(prepared, loader: str, world_size: int = 2, **options):
    data = DataConfig(root=str(prepared), loader=loader, source="files", **(PLAIN | options))
    return [build_train_loader(data, batch_size=BATCH, rank=r, world_size=world_size, seed=SEED, device="cpu",
                               num_classes=4) for r in range(world_size)]


@pytest.fixture(scope="module")
def ffcv_ranks(prepared):
    return _loaders(prepared, "ffcv")


def test_ffcv_batches_are_the_reference_samples_and_resume_exactly(prepared, ffcv_ranks):
    labels = read_manifest(prepared, "train").labels
    for rank, loader in enumerate(ffcv_ranks):
        sampler = TrainBatchSampler(TRAIN, BATCH, rank, 2, SEED)
        assert len(loader) == len(sampler) == 4
        for epoch, skip in ((0, 0), (1, 0), (1, 3)):
            loader.set_epoch(epoch, skip_batches=skip)
            got = [y.tolist() for _, y in loader]
            assert got == [labels[sampler.batch_indices(epoch, b)].tolist() for b in range(skip, 4)]


def test_dali_two_ranks_cover_each_used_sample_once_per_epoch(prepared):
    labels = read_manifest(prepared, "train").labels
    ranks = _loaders(prepared, "dali", train_augment="random_resized_crop", flip=True, lighting_std=0.1)
    assert [len(x) for x in ranks] == [4, 4]
    for epoch in range(2):
        seen = []
        for loader in ranks:
            loader.set_epoch(epoch)
            for images, batch_labels, indices in loader.iter_with_indices():
                assert images.shape == (BATCH, 3, 32, 32)
                assert batch_labels.tolist() == labels[indices.numpy()].tolist()
                seen += indices.tolist()
        assert len(seen) == len(set(seen)) == 4 * 2 * BATCH


def _channel_means(loader) -> torch.Tensor:
    loader.set_epoch(0)
    return torch.cat([images for images, _ in loader]).mean(dim=(0, 2, 3))


def test_image_statistics_match_the_torch_loader(prepared, ffcv_ranks):
    # Centre crops of the same files in one epoch order: differences are the JPEG decoders' only.
    # FFCV reads exactly the torch loader's samples (rank 0 of 2); DALI 64 of the same 70 files.
    torch_rank0 = _channel_means(_loaders(prepared, "torch")[0])
    assert ((torch_rank0 > 0.3) & (torch_rank0 < 0.7)).all()  # the synthetic images' pixels, over 255
    assert (_channel_means(ffcv_ranks[0]) - torch_rank0).abs().max() < 0.01
    torch_all = _channel_means(_loaders(prepared, "torch", world_size=1)[0])
    assert (_channel_means(_loaders(prepared, "dali", world_size=1)[0]) - torch_all).abs().max() < 0.02


@pytest.mark.parametrize("name", ["dali", "ffcv", "torch"])
def test_a_few_training_steps_with_each_loader(prepared, ffcv_ranks, name):
    torch.manual_seed(0)
    loader = ffcv_ranks[0] if name == "ffcv" else _loaders(prepared, name, world_size=1)[0]
    model = models.build("resnet20", num_classes=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    loader.set_epoch(0)
    for step, (images, labels) in enumerate(loader):
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        assert torch.isfinite(loss)
        if step == 2:
            break
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", ["dali", "ffcv"])
def test_eval_center_counts_every_val_sample_once_over_two_ranks(prepared, name):
    data = DataConfig(root=str(prepared), loader=name, source="files", **PLAIN)
    counted, lengths = Counter(), []
    for rank in (0, 1):
        loader = build_eval_loader(data, mode="center", batch_size=4, rank=rank, world_size=2, device="cpu")
        batches = list(loader)
        lengths.append(len(batches))
        for batch in batches:
            assert batch.views[0].shape[1:] == (3, 32, 32)
            counted.update(batch.labels[batch.valid].tolist())
    assert lengths[0] == lengths[1]
    assert counted == Counter(read_manifest(prepared, "val").labels.tolist())


def test_bench_loaders_reports_each_loader_and_its_ratio_to_torch(prepared, tmp_path):
    import json

    from dtrain.commands.bench import bench

    result = CliRunner().invoke(bench, ["loaders", "--data", str(prepared), "--loaders", "torch,dali", "--batch", "8",
                                        "--crop", "32", "--workers", "1", "--device", "cpu", "--warmup", "1",
                                        "--iters", "2", "--repeats", "1", "--json", str(tmp_path / "l.json")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "l.json").read_text())
    assert [r["name"] for r in payload["results"]] == ["loader:torch", "loader:dali"]
    assert payload["ratio_to_torch"]["loader:torch"] == 1.0 and payload["ratio_to_torch"]["loader:dali"] > 0


@pytest.mark.slow
def test_ffcv_random_resized_crop_and_quasi_random_order(prepared):
    rrc = _loaders(prepared, "ffcv", world_size=1, train_augment="random_resized_crop", flip=True,
                   lighting_std=0.1)[0]
    rrc.set_epoch(0)
    images = torch.cat([x for x, _ in rrc])
    assert images.shape == (8 * BATCH, 3, 32, 32)
    from dtrain.data.ffcv_loader import FfcvTrainLoader

    jitter = _loaders(prepared, "ffcv", world_size=1, train_augment="scale_jitter", scale_range=[48, 96])[0]
    jitter.set_epoch(0)
    assert next(iter(jitter))[0].shape == (BATCH, 3, 32, 32)  # R1's scale augmentation, FFCV-decoded
    data = DataConfig(root=str(prepared), loader="ffcv", **PLAIN)
    seen = []
    for rank in (0, 1):
        loader = FfcvTrainLoader(data, batch_size=BATCH, rank=rank, world_size=2, seed=SEED, device=torch.device("cpu"),
                                 order="quasi_random")
        loader.set_epoch(1)
        seen += [len(y) for _, y in loader]
    assert seen == [BATCH] * 8


@pytest.mark.gpu
@gpu
def test_dali_mixed_decode_feeds_the_gpu(prepared):
    data = DataConfig(root=str(prepared), loader="dali", source="files", train_augment="random_resized_crop",
                      crop_size=32, workers=2)
    loader = build_train_loader(data, batch_size=BATCH, rank=0, world_size=1, seed=0, device="cuda", num_classes=4)
    images, labels = next(iter(loader))
    assert images.is_cuda and labels.is_cuda and images.shape == (BATCH, 3, 32, 32)
    assert torch.isfinite(images).all() and 0.5 < images.std().item() < 2.0


@pytest.mark.gpu
@gpu
def test_ffcv_to_device_feeds_the_gpu(prepared):
    data = DataConfig(root=str(prepared), loader="ffcv", train_augment="random_resized_crop", crop_size=32, workers=2)
    loader = build_train_loader(data, batch_size=BATCH, rank=0, world_size=1, seed=0, device="cuda", num_classes=4)
    images, labels = next(iter(loader))
    assert images.is_cuda and labels.is_cuda and images.shape == (BATCH, 3, 32, 32)
    assert torch.isfinite(images).all() and 0.5 < images.std().item() < 2.0


def test_ffcv_follows_the_repeated_augmentation_order(prepared):
    """data.repeated_augment_reps: FFCV reads the sampler's repeated order (duplicates included)."""
    read = []
    for rank, loader in enumerate(_loaders(prepared, "ffcv", repeated_augment_reps=2)):
        sampler = TrainBatchSampler(TRAIN, BATCH, rank, 2, SEED, repeats=2)
        loader.set_epoch(1)
        labels = [y for _, y in loader]
        expected = [i for b in range(len(sampler)) for i in sampler.batch_indices(1, b)]
        assert len(labels) == len(sampler) and loader.order.current.tolist() == expected
        read += expected
    assert set(Counter(read).values()) == {2}  # every sample twice, once on each rank
