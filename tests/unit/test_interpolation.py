"""Resampling filters (data.train_interpolation, data.val_interpolation): timm resizes bicubically at
test time (its ResNet strikes back weights: bicubic, crop_pct 0.95) and trains with bilinear or
bicubic drawn per sample (train.py's --train-interpolation random); torchvision is bilinear."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dtrain.config import DataConfig
from dtrain.data.eval_views import EvalTransform
from dtrain.data.transforms import INTERPOLATIONS, RandomResizedCrop, TrainTransform, random_resized_crop_box
from dtrain.errors import ConfigError
from dtrain.resolve import load_config

RAW = dict(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], lighting_std=0.0, flip=False)


def _image(width: int = 97, height: int = 71) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


@pytest.mark.parametrize("name, resample", [("bilinear", Image.Resampling.BILINEAR),
                                            ("bicubic", Image.Resampling.BICUBIC)])
def test_the_training_crop_is_pils_resize_of_the_drawn_box_with_that_filter(name, resample):
    image = _image()
    transform = TrainTransform(DataConfig(train_augment="random_resized_crop", crop_size=40,
                                          train_interpolation=name, **RAW))
    pixels, _, _ = transform.sample(image, np.random.default_rng(5))
    left, top, w, h = random_resized_crop_box(97, 71, (0.08, 1.0), (0.75, 4 / 3), np.random.default_rng(5))
    expected = image.resize((40, 40), resample, box=(left, top, left + w, top + h))
    assert np.array_equal(pixels.numpy(), _pixels(expected))


def test_bicubic_and_bilinear_crops_differ_and_bilinear_draws_nothing_more():
    image = _image()
    crops = {name: RandomResizedCrop((0.08, 1.0), (0.75, 4 / 3), 40, True, INTERPOLATIONS[name])
             for name in ("bilinear", "bicubic")}
    rngs = {name: np.random.default_rng(3) for name in crops}
    out = {name: _pixels(crop(image, rngs[name])) for name, crop in crops.items()}
    assert not np.array_equal(out["bilinear"], out["bicubic"])
    # one filter draws nothing: the generators stand at the same place (the flip and later draws unchanged)
    assert rngs["bilinear"].integers(1 << 30) == rngs["bicubic"].integers(1 << 30)


def test_random_draws_one_of_the_two_filters_per_sample_repeatably():
    image = _image()
    crop = RandomResizedCrop((0.08, 1.0), (0.75, 4 / 3), 40, False, INTERPOLATIONS["random"])
    fixed = {name: RandomResizedCrop((0.08, 1.0), (0.75, 4 / 3), 40, False, INTERPOLATIONS[name])
             for name in ("bilinear", "bicubic")}
    used = []
    for seed in range(40):
        view = _pixels(crop(image, np.random.default_rng(seed)))
        assert np.array_equal(view, _pixels(crop(image, np.random.default_rng(seed))))  # per-sample draw
        # the box is drawn first, then the filter (timm's order): the same box as a one-filter crop
        matches = [name for name, one in fixed.items()
                   if np.array_equal(view, _pixels(one(image, np.random.default_rng(seed))))]
        assert len(matches) == 1, seed
        used += matches
    assert 10 <= used.count("bicubic") <= 30  # both filters, about half each (binomial(40, 1/2))


@pytest.mark.parametrize("mode", ["center", "ten-crop", "multi-scale", "single-320"])
def test_every_test_view_resizes_with_val_interpolation(mode):
    image = _image(400, 330)
    views = {name: EvalTransform(DataConfig(val_resize=64, val_crop=56, val_interpolation=name, **RAW), mode,
                                 [48, 64]).views(image) for name in ("bilinear", "bicubic")}
    pairs = zip(views["bilinear"], views["bicubic"], strict=True)  # as many views either way
    assert all(not np.array_equal(_pixels(a), _pixels(b)) for a, b in pairs)
    if mode == "center":
        resized = image.resize((int(64 * 400 / 330), 64), Image.Resampling.BICUBIC)
        left, top = (resized.width - 56) // 2, (resized.height - 56) // 2
        # torchvision's centre crop rounds the offsets; 77x64 -> offsets 10 and 4 either way
        assert np.array_equal(_pixels(views["bicubic"][0]), _pixels(resized.crop((left, top, left + 56, top + 56))))


def test_filters_are_refused_on_loaders_that_do_not_resize_with_them():
    with pytest.raises(ConfigError, match="data.train_interpolation=bicubic resizes in the torch, synthetic, dali "
                                          "loaders, not data.loader=gpu; .* set data.train_interpolation=bilinear"):
        load_config("digits_resnet20", ["data.loader=gpu", "data.train_interpolation=bicubic"])
    with pytest.raises(ConfigError, match="data.train_interpolation=random resizes in the torch, synthetic loaders, "
                                          "not data.loader=dali"):
        load_config("digits_resnet20", ["data.loader=dali", "data.train_interpolation=random"])
    with pytest.raises(ConfigError, match="data.val_interpolation=bicubic .* not data.loader=ffcv"):
        load_config("digits_resnet20", ["data.loader=ffcv", "data.val_interpolation=bicubic"])
    with pytest.raises(ConfigError, match="data.val_interpolation='random' is not one of bilinear, bicubic"):
        load_config("digits_resnet20", ["data.val_interpolation=random"])
    assert load_config("digits_resnet20", ["data.loader=dali", "data.val_interpolation=bicubic"]).data.loader == "dali"


@pytest.mark.parametrize("recipe", ["resnet50_rsb_a1", "resnet50_rsb_a2", "resnet50_rsb_a3"])
def test_rsb_recipes_resize_as_timm_does(recipe):
    data = load_config(recipe, []).data
    assert (data.train_interpolation, data.val_interpolation) == ("random", "bicubic")
    tv2 = load_config("resnet50_tv2", []).data  # torchvision: --interpolation bilinear
    assert (tv2.train_interpolation, tv2.val_interpolation) == ("bilinear", "bilinear")
