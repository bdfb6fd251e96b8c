"""Progressive resizing with data.loader=ffcv on a .beton written by `dtrain prepare`: the decoder
follows the epoch's crop size (the batch shapes) and its crop (the centre crop's ratio, held as
a constant by FFCV's compiled code, is the epoch's: the pixels are the torch loader's view up to
the JPEG decoder and resize filter). FFCV recompiles each epoch (~10 s here): slow."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("ffcv", reason="FFCV is not installed")

from dtrain.config import DataConfig  # noqa: E402
from dtrain.data import build_train_loader  # noqa: E402
from dtrain.data.sampling import TrainBatchSampler  # noqa: E402
from dtrain.data.sources import read_manifest  # noqa: E402
from dtrain.errors import ConfigError  # noqa: E402
from dtrain_prep.cli import prepare  # noqa: E402

TRAIN, BATCH, SEED = 32, 8, 5
RAMP = dict(min_res=32, max_res=96, start_ramp=0, end_ramp=2)  # epochs 0, 1, 2: 32, 64, 96
# No random geometry, no normalisation: the centre crop of a 96 shorter side, resized to the epoch's size.
PLAIN = dict(train_augment="none", flip=False, lighting_std=0.0, mean=[0.0] * 3, std=[1.0] * 3, val_resize=96,
             workers=1, source="files", **RAMP)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("progressive") / "synthetic"
    result = CliRunner().invoke(prepare, ["synthetic", "--count", str(TRAIN), "--val-count", "4", "--width", "128",
                                          "--height", "96", "--num-classes", "4", "--shard-size", "16",
                                          "--workers", "1", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _loader(prepared, name: str, **options):
    data = DataConfig(root=str(prepared), loader=name, **(PLAIN | options))
    return build_train_loader(data, batch_size=BATCH, rank=0, world_size=1, seed=SEED, device="cpu", num_classes=4)


def _epoch(loader, epoch: int, skip: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch, skip)
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.slow
def test_ffcv_follows_the_ramp_and_crops_as_the_torch_loader(prepared):
    ffcv, reference = _loader(prepared, "ffcv"), _loader(prepared, "torch")
    labels = read_manifest(prepared, "train").labels
    sampler = TrainBatchSampler(TRAIN, BATCH, 0, 1, SEED)
    for epoch, skip, size in ((0, 0, 32), (2, 0, 96), (1, 2, 64)):  # the last: resumed mid-epoch
        ours, theirs = _epoch(ffcv, epoch, skip), _epoch(reference, epoch, skip)
        assert [y.tolist() for _, y in ours] == [labels[sampler.batch_indices(epoch, b)].tolist()
                                                 for b in range(skip, len(sampler))]
        for (a, _), (b, _) in zip(ours, theirs, strict=True):
            assert a.shape == b.shape == (BATCH, 3, size, size)
            # the same view up to decoder and filter; a stale crop ratio differs by far more (see below)
            assert (a - b).abs().mean().item() < 0.03


@pytest.mark.slow
def test_ffcv_random_resized_crop_and_scale_jitter_batches_take_the_epoch_size(prepared):
    for augment in ("random_resized_crop", "scale_jitter"):
        loader = _loader(prepared, "ffcv", train_augment=augment, scale_range=[96, 128])
        for epoch, size in ((1, 64), (2, 96)):
            assert all(x.shape == (BATCH, 3, size, size) for x, _ in _epoch(loader, epoch))


def test_ffcv_pad_crop_refuses_progressive_resizing_in_one_line(prepared):
    with pytest.raises(ConfigError, match="pad_crop with data.loader=ffcv cannot change the crop size per epoch"):
        _loader(prepared, "ffcv", train_augment="pad_crop")
