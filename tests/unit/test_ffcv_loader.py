"""FFCV loader: what it refuses, with a one-line error naming what to use (no .beton compile needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("ffcv", reason="FFCV is not installed")


from dtrain.config import DataConfig  # noqa: E402
from dtrain.data import build_eval_loader, build_train_loader  # noqa: E402
from dtrain.errors import ConfigError  # noqa: E402

SMALL = dict(loader="ffcv", crop_size=24, scale_range=[32, 40], val_resize=32, val_crop=24, workers=1)


def _train(data):
    return build_train_loader(data, batch_size=4, rank=0, world_size=1, seed=0, device="cpu")


@pytest.mark.parametrize("augment,message", [
    ("scale_jitter", "ffcv/train.beton is missing: prepare with --formats ffcv"),  # R1's augmentation exists
    ("pad_crop", "needs every image to be 24x24"),  # the fixture's images have several sizes
    ("random_resized_crop", "ffcv/train.beton is missing: prepare with --formats ffcv"),
])
def test_train_refusals_name_the_fix(prepared, augment, message):
    with pytest.raises(ConfigError, match=message):
        _train(DataConfig(root=str(prepared), train_augment=augment, **SMALL))


@pytest.mark.parametrize("mode,views", [("ten-crop", 10), ("multi-scale", 2)])
def test_eval_modes_without_an_ffcv_decoder_fall_back_to_the_torch_loader(prepared, mode, views, capsys):
    from dtrain.data.loaders import EvalLoader

    loader = build_eval_loader(DataConfig(root=str(prepared), **SMALL), mode=mode, batch_size=2, rank=0,
                               world_size=1, scales=[32], device="cpu")
    assert isinstance(loader, EvalLoader)
    assert len(next(iter(loader)).views) == views
    assert "data.loader=ffcv has no eval.mode=" in capsys.readouterr().err


def test_scale_jitter_crop_is_r1s_resize_then_crop():
    # shorter side s ~ U{low..high}, then a `size` crop == a size*short/s square of the original
    import numpy as np

    from dtrain.data.ffcv_loader import scale_jitter_crop

    np.random.seed(0)
    height, width, low, high, size = 300, 400, 256, 480, 224
    sides = []
    for _ in range(500):
        i, j, h, w = scale_jitter_crop(height, width, np.array([low, high, size], dtype=float), None)
        assert h == w and 0 <= i <= height - h and 0 <= j <= width - w
        sides.append(h)
    assert min(sides) >= round(size * height / high) and max(sides) <= round(size * height / low)
    assert max(sides) - min(sides) > 0.8 * (size * height / low - size * height / high)


def test_unknown_order_is_refused(prepared):
    from dtrain.data.ffcv_loader import FfcvTrainLoader

    with pytest.raises(ConfigError, match="random, quasi_random"):
        FfcvTrainLoader(DataConfig(root=str(prepared), train_augment="random_resized_crop", **SMALL), batch_size=4,
                        rank=0, world_size=1, seed=0, device="cpu", order="sequential")
