"""Paper augmentations and evaluation views (dtrain.data.transforms, dtrain.data.eval_views)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dtrain.config import DataConfig
from dtrain.data.eval_views import EvalTransform
from dtrain.data.stats import channel_stats, loader_channel_stats
from dtrain.data.transforms import (
    LIGHTING_EIGVAL,
    LIGHTING_EIGVEC,
    PadCrop,
    RandomResizedCrop,
    ScaleJitter,
    TrainTransform,
    lighting_shift,
    random_resized_crop_box,
    to_tensor,
)
from dtrain.errors import ConfigError

RAW = dict(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], lighting_std=0.0)  # output = pixels in [0, 1]


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")


def _rng(i: int) -> np.random.Generator:
    return np.random.default_rng(i)


@pytest.mark.parametrize("augment, extra, size", [
    ("scale_jitter", dict(scale_range=[64, 96], crop_size=56), (120, 90)),
    ("random_resized_crop", dict(crop_size=56), (120, 90)),
    ("pad_crop", dict(crop_size=32, pad=4), (32, 32)),
    ("none", dict(crop_size=56, val_resize=64), (120, 90)),
])
def test_train_transform_shape_dtype_and_range(augment, extra, size):
    transform = TrainTransform(DataConfig(train_augment=augment, **extra, **RAW))
    for i in range(5):
        out = transform(_image(*size, seed=i), _rng(i))
        assert out.shape == (3, extra["crop_size"], extra["crop_size"]) and out.dtype == torch.float32
        assert out.min() >= 0.0 and out.max() <= 1.0


def test_scale_jitter_resizes_shorter_side_into_256_480_keeping_aspect():
    jitter = ScaleJitter(256, 480, 224, flip=True)
    shorter = []
    for orientation in [(100, 75), (75, 100)]:
        image = _image(*orientation)
        for i in range(150):
            resized = jitter.resize(image, _rng(i))
            short, long = sorted(resized.size)
            assert 256 <= short <= 480
            assert long == int(short * 100 / 75)  # aspect kept, torchvision's rounding
            shorter.append(short)
    # uniform over the integers of [256, 480]: 300 draws reach both ends of the range
    assert min(shorter) < 270 and max(shorter) > 465
    assert jitter(_image(100, 75), _rng(0)).size == (224, 224)


def test_random_resized_crop_box_follows_scale_and_ratio():
    for i in range(300):
        left, top, w, h = random_resized_crop_box(500, 375, (0.08, 1.0), (3 / 4, 4 / 3), _rng(i))
        assert left >= 0 and left + w <= 500 and top >= 0 and top + h <= 375
        # the rounding of width and height moves area and ratio a little
        assert 0.08 * 0.95 <= w * h / (500 * 375) <= 1.0
        assert 3 / 4 * 0.97 <= w / h <= 4 / 3 * 1.03


def test_random_resized_crop_falls_back_to_centre_crop():
    # an area of 1.0 with a 4:1 aspect ratio never fits a square image: centred crop at ratio 4
    box = random_resized_crop_box(100, 100, (1.0, 1.0), (4.0, 4.0), _rng(0))
    assert box == (0, 37, 100, 25)  # torchvision: (h - crop_h) // 2
    image = RandomResizedCrop((0.08, 1.0), (3 / 4, 4 / 3), 40, flip=False)(_image(90, 70), _rng(1))
    assert image.size == (40, 40)


def test_pad_crop_shifts_inside_zero_padding():
    ones = Image.new("RGB", (32, 32), (255, 255, 255))
    crops = [to_tensor(PadCrop(4, 32, flip=True)(ones, _rng(i))) for i in range(40)]
    zero_fraction = [float((c == 0).all(dim=0).float().mean()) for c in crops]
    assert all(f <= 1 - (28 * 28) / (32 * 32) + 1e-6 for f in zero_fraction)  # at most 4 rows+cols padded
    assert any(f > 0 for f in zero_fraction) and any(f == 0 for f in zero_fraction)


def test_flip_false_never_mirrors():
    image = _image(32, 32, seed=3)
    flips = 0
    for i in range(30):
        no_flip = to_tensor(PadCrop(4, 32, flip=False)(image, _rng(i)))
        maybe = to_tensor(PadCrop(4, 32, flip=True)(image, _rng(i)))  # same rng: same crop
        if torch.equal(maybe, no_flip.flip(-1)):
            flips += 1
        else:
            assert torch.equal(maybe, no_flip)
    assert 5 <= flips <= 25


def test_pca_lighting_statistics_match_alexnet():
    std = 0.1
    shifts = torch.stack([lighting_shift(std, _rng(i)) for i in range(4000)]).double()
    eigvec = LIGHTING_EIGVEC.double()
    expected_cov = eigvec @ torch.diag((std * LIGHTING_EIGVAL.double()) ** 2) @ eigvec.T
    assert torch.allclose(shifts.mean(0), torch.zeros(3, dtype=torch.float64), atol=3e-3)
    assert torch.allclose(torch.cov(shifts.T), expected_cov, rtol=0.1, atol=2e-6)
    # applied as one RGB offset over the whole image, after the [0, 1] conversion
    image = Image.new("RGB", (8, 8), (128, 128, 128))
    cfg = DataConfig(train_augment="none", val_resize=8, crop_size=8, mean=[0, 0, 0], std=[1, 1, 1], lighting_std=std)
    out = TrainTransform(cfg)(image, _rng(7))
    offset = out - 128 / 255
    assert torch.allclose(offset, offset[:, :1, :1].expand_as(offset), atol=1e-6)
    assert offset.abs().max() > 0


def test_normalisation_uses_data_mean_and_std():
    image = Image.new("RGB", (8, 8), (51, 102, 153))  # 0.2, 0.4, 0.6
    cfg = DataConfig(train_augment="none", val_resize=8, crop_size=8, lighting_std=0.0,
                     mean=[0.2, 0.4, 0.6], std=[0.5, 0.5, 0.5])
    assert torch.allclose(TrainTransform(cfg)(image, _rng(0)), torch.zeros(3, 8, 8), atol=1e-6)


def test_ten_crop_views_and_centre_matches_center_mode():
    cfg = DataConfig(val_resize=64, val_crop=56, **RAW)
    image = _image(100, 75, seed=5)
    views = EvalTransform(cfg, "ten-crop", [])(image)
    assert len(views) == 10 and all(v.shape == (3, 56, 56) for v in views)
    center = EvalTransform(cfg, "center", [])(image)
    assert len(center) == 1 and torch.equal(views[4], center[0])
    for plain, flipped in zip(views[:5], views[5:], strict=True):
        assert torch.equal(flipped, plain.flip(-1))
    assert len({v.sum().item() for v in views[:5]}) == 5  # five different places


def test_multi_scale_and_single_320_views():
    cfg = DataConfig(**RAW)
    views = EvalTransform(cfg, "multi-scale", [32, 48])(_image(40, 30))
    assert [tuple(v.shape) for v in views] == [(3, 32, 42), (3, 32, 42), (3, 48, 64), (3, 48, 64)]
    assert torch.equal(views[1], views[0].flip(-1))
    (single,) = EvalTransform(cfg, "single-320", [])(_image(500, 375))
    assert single.shape == (3, 320, 320)


def test_center_on_cifar_sized_data_is_the_original_image():
    cfg = DataConfig(val_resize=32, val_crop=32, **RAW)
    image = _image(32, 32, seed=9)
    (pixels,) = EvalTransform(cfg, "center", []).pixels(image)
    assert np.array_equal(pixels.numpy(), np.asarray(image))  # the very pixels, no resampling
    (view,) = EvalTransform(cfg, "center", [])(image)
    assert torch.allclose(view, to_tensor(image), rtol=0, atol=1e-6)


def test_bad_augment_and_view_settings_are_config_errors():
    with pytest.raises(ConfigError, match="train_augment"):
        TrainTransform(DataConfig(train_augment="mixup"))
    with pytest.raises(ConfigError, match="eval.mode"):
        EvalTransform(DataConfig(), "five-crop", [])
    with pytest.raises(ConfigError, match="val_resize"):
        EvalTransform(DataConfig(val_resize=200, val_crop=224), "center", [])


def test_channel_stats_helpers():
    images = torch.stack([torch.full((3, 4, 4), 0.0), torch.full((3, 4, 4), 1.0)])
    images[:, 2] = 0.25
    mean, std = channel_stats(images)
    assert torch.allclose(mean, torch.tensor([0.5, 0.5, 0.25], dtype=torch.float64))
    assert torch.allclose(std, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    mean2, std2 = loader_channel_stats([images[:1], images[1:]])
    assert torch.allclose(mean2, mean) and torch.allclose(std2, std)
