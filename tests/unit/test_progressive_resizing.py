"""Progressive resizing (data.min_res/max_res/start_ramp/end_ramp) and separate train/test sizes.

The rule is FFCV's (libffcv/ffcv-imagenet train_imagenet.py, get_resolution); the expected sizes
below are worked out by hand from it, so a changed rule (other rounding, other ends) fails here.
"""

from __future__ import annotations

import pytest
import torch

from dtrain.config import DataConfig
from dtrain.data import build_eval_loader, build_train_loader
from dtrain.data.resolution import largest_train_crop, ramp_resolution, train_crop_size
from dtrain.errors import ConfigError
from dtrain.resolve import load_config

# FFCV's rn50_88_epochs.yaml: resolution min_res 160, max_res 192, start_ramp 65, end_ramp 76.
RN50_88 = dict(min_res=160, max_res=192, start_ramp=65, end_ramp=76)
# A ramp whose sizes all differ at epochs 0, 1, 2: 32, 64, 96.
RAMP = dict(min_res=32, max_res=96, start_ramp=0, end_ramp=2)


@pytest.mark.parametrize("epoch,size", [
    (0, 160), (65, 160),  # up to and including start_ramp: min_res
    (66, 160), (70, 160),  # 162.9 and 174.5 round to 5 x 32
    (71, 192), (75, 192),  # 177.5 and 189.1 round to 6 x 32
    (76, 192), (87, 192), (200, 192),  # from end_ramp on: max_res
])
def test_ffcv_rn50_88_ramp(epoch, size):
    assert ramp_resolution(epoch, **RN50_88) == size
    assert train_crop_size(DataConfig(crop_size=224, **RN50_88), epoch) == size


def test_ramp_rounds_half_to_even_as_numpy_and_ends_are_not_rounded():
    # 32 -> 96 over epochs 0..4: 48 (1.5 x 32) rounds up to 64, 80 (2.5 x 32) down to 64 (np.round)
    assert [ramp_resolution(e, 32, 96, 0, 4) for e in range(6)] == [32, 64, 64, 64, 96, 96]
    # the ends are min_res and max_res as given, not multiples of 32
    # (epoch 11: 100 + 85 x 0.9 = 176.5 rounds to 6 x 32, past max_res)
    assert [ramp_resolution(e, 100, 185, 2, 12) for e in (0, 2, 10, 11, 12)] == [100, 100, 160, 192, 185]
    # start_ramp == end_ramp: a step, no interpolation
    assert [ramp_resolution(e, 64, 128, 3, 3) for e in (2, 3, 4)] == [64, 64, 128]


def test_off_is_crop_size_every_epoch_and_largest_crop_covers_the_rounding():
    assert [train_crop_size(DataConfig(crop_size=176), e) for e in (0, 50)] == [176, 176]
    assert largest_train_crop(DataConfig(crop_size=176)) == 176
    assert largest_train_crop(DataConfig(min_res=100, max_res=185, start_ramp=2, end_ramp=12)) == 192
    assert largest_train_crop(DataConfig(min_res=100, max_res=180, start_ramp=2, end_ramp=12)) == 180  # 172 -> 160
    assert largest_train_crop(DataConfig(**RN50_88)) == 192


def _train(data: DataConfig, loader: str, **kw):
    return build_train_loader(DataConfig(**(vars(data) | {"loader": loader})), batch_size=4, rank=0, world_size=1,
                              seed=3, **kw)


def _epoch(loader, epoch: int, skip: int = 0) -> list[torch.Tensor]:
    loader.set_epoch(epoch, skip)
    return [images.clone() for images, _ in loader]


@pytest.mark.parametrize("name", ["torch", "gpu", "synthetic"])
def test_each_loader_crops_each_epoch_at_the_ramp_size(prepared, name):
    data = DataConfig(root=str(prepared), train_augment="random_resized_crop", workers=2, gpu_decoder="pil",
                      synthetic_samples=16, synthetic_image_size=96, **RAMP)
    loader = _train(data, name)
    for epoch, size in ((0, 32), (1, 64), (2, 96), (1, 64)):  # back to epoch 1: workers are persistent
        batches = _epoch(loader, epoch)
        assert batches and all(b.shape == (4, 3, size, size) for b in batches)
    # resumed in the middle of epoch 1: the same size and the same pixels as the whole epoch's batches 2..
    whole, resumed = _epoch(loader, 1), _epoch(loader, 1, skip=2)
    assert len(resumed) == len(whole) - 2
    assert all(torch.equal(a, b) for a, b in zip(whole[2:], resumed, strict=True))


def test_gpu_loader_draws_the_torch_loaders_crops_at_each_size(prepared):
    data = DataConfig(root=str(prepared), train_augment="random_resized_crop", workers=0, gpu_decoder="pil",
                      lighting_std=0.0, mean=[0.0] * 3, std=[1.0] * 3, **RAMP)
    reference, ours = _train(data, "torch"), _train(data, "gpu")
    for epoch in (0, 2):
        for a, b in zip(_epoch(reference, epoch), _epoch(ours, epoch), strict=True):
            assert a.shape == b.shape and (a - b).abs().max().item() <= 1.001 / 255  # PIL's +-1 level (gpu tests)


def test_tv2_train_176_and_eval_232_to_224_on_the_torch_loader(prepared):
    """torchvision's tv2 recipe: --train-crop-size 176 --val-resize-size 232 --val-crop-size 224."""
    data = DataConfig(root=str(prepared), train_augment="random_resized_crop", crop_size=176, val_resize=232,
                      val_crop=224, workers=0)
    train = _train(data, "torch")
    assert _epoch(train, 0)[0].shape == (4, 3, 176, 176)
    batch = next(iter(build_eval_loader(data, mode="center", batch_size=2, rank=0, world_size=1)))
    assert len(batch.views) == 1 and batch.views[0].shape == (2, 3, 224, 224)


@pytest.mark.parametrize("overrides,message", [
    (["data.min_res=160"], r"data.min_res=160 and data.max_res=None: progressive resizing needs both"),
    (["data.min_res=192", "data.max_res=160"], r"needs 32 <= data.min_res <= data.max_res"),
    (["data.min_res=16", "data.max_res=64"], r"needs 32 <= data.min_res <= data.max_res"),
    (["data.min_res=160", "data.max_res=192", "data.start_ramp=10", "data.end_ramp=5"],
     r"needs 0 <= data.start_ramp <= data.end_ramp"),
    (["data.min_res=160", "data.max_res=192", "data.loader=dali"], r"data.loader=dali cannot change the crop size"),
])
def test_bad_ramps_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config("resnet50", overrides)
    assert "\n" not in str(caught.value)


def test_synthetic_images_must_hold_the_largest_crop():
    with pytest.raises(ConfigError, match=r"smaller than the largest progressive-resizing crop \(96, "):
        load_config("cifar10_resnet20", ["data.loader=synthetic", "data.synthetic_image_size=64",
                                         "data.train_augment=random_resized_crop", "data.min_res=32",
                                         "data.max_res=96", "data.end_ramp=2"])


def test_loaders_that_cannot_follow_the_ramp_refuse_in_one_line(prepared):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    data = DataConfig(root=str(prepared), train_augment="random_resized_crop", **RAMP)
    with pytest.raises(ConfigError, match="data.loader=dali cannot change the crop size per epoch .* the torch, gpu, "
                                          "synthetic and ffcv loaders can") as caught:
        _train(data, "dali")
    assert "\n" not in str(caught.value)


def test_smoke_mode_keeps_the_ramp_at_the_smoke_crop():
    """train.smoke=true scales every image size to a 32 crop; the ramp's ends stay at 32 (its floor)
    instead of refusing the synthetic images as smaller than a 192 crop."""
    data = load_config("resnet50", ["train.smoke=true", "data.loader=synthetic", "data.min_res=160", "data.max_res=192",
                                    "data.end_ramp=2"]).data
    assert (data.min_res, data.max_res, data.synthetic_image_size) == (32, 32, 32)
    assert {train_crop_size(data, epoch) for epoch in range(4)} == {32}
