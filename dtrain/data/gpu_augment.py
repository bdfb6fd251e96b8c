"""The papers' augmentations as per-sample *plans* drawn without the pixels, applied to a decoded
batch on the device (data.loader=gpu).

A plan is everything random about one sample: a source box, the size it is resized to, zero
padding, a crop of the padded result and a flip (+ the PCA lighting offset). The draws are the
ones dtrain.data.transforms makes, in the same order from the same per-sample generator, using
only the image size stored in the manifest, so data.loader=gpu and data.loader=torch give the
same sample the same augmentation (tests/unit/test_gpu_loader.py compares the pixels).

Resizing reproduces PIL's bilinear filter exactly (dtrain.data.gpu_resample).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dtrain.config import DataConfig
from dtrain.errors import ConfigError

from .eval_views import R2_SINGLE_CROP
from .normalize import ScaledMeanImage
from .padding import pad_crop_window, zero_padding
from .resolution import data_at_epoch
from .stats import per_pixel_mean
from .transforms import TRAIN_AUGMENTS, lighting_shift, random_resized_crop_box

# Plan columns: source box, resized size, zero padding, crop of the padded image, flip
BOX_L, BOX_T, BOX_W, BOX_H, RES_W, RES_H, PAD, CROP_L, CROP_T, CROP_W, CROP_H, FLIP = range(12)


def shorter_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after transforms.resize_shorter_side(image, size)."""
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return width, height
    new_long = int(size * long / short)
    return (size, new_long) if width <= height else (new_long, size)


def _plan(box: Sequence[int], resized: Sequence[int], pad: int, crop: Sequence[int], flip: bool) -> list[int]:
    return [*box, *resized, pad, *crop, int(flip)]


def _draw_flip(rng: np.random.Generator, enabled: bool) -> bool:
    flip = rng.random() < 0.5  # drawn even when disabled, as transforms.maybe_flip does
    return enabled and flip


def _plan_scale_jitter(data: DataConfig, width: int, height: int, rng: np.random.Generator) -> list[int]:
    low, high = data.scale_range
    rw, rh = shorter_side_size(width, height, int(rng.integers(low, high + 1)))
    size = data.crop_size
    left, top = int(rng.integers(0, rw - size + 1)), int(rng.integers(0, rh - size + 1))
    return _plan((0, 0, width, height), (rw, rh), 0, (left, top, size, size), _draw_flip(rng, data.flip))


def _plan_random_resized_crop(data: DataConfig, width: int, height: int, rng: np.random.Generator) -> list[int]:
    box = random_resized_crop_box(width, height, data.rrc_scale, data.rrc_ratio, rng)
    size = data.crop_size
    return _plan(box, (size, size), 0, (0, 0, size, size), _draw_flip(rng, data.flip))


def _plan_pad_crop(data: DataConfig, width: int, height: int, rng: np.random.Generator) -> list[int]:
    size, pad = data.crop_size, max(0, data.pad)
    left = int(rng.integers(0, width + 2 * pad - size + 1))
    top = int(rng.integers(0, height + 2 * pad - size + 1))
    return _plan((0, 0, width, height), (width, height), pad, (left, top, size, size), _draw_flip(rng, data.flip))


def _centre_crop_plan(width: int, height: int, resize: int, size: int) -> list[int]:
    rw, rh = shorter_side_size(width, height, resize)
    if rw < size or rh < size:
        raise ValueError(f"cannot centre-crop {size}x{size} from a {rw}x{rh} image")
    left, top = int(round((rw - size) / 2.0)), int(round((rh - size) / 2.0))  # as transforms.center_crop
    return _plan((0, 0, width, height), (rw, rh), 0, (left, top, size, size), False)


def _plan_none(data: DataConfig, width: int, height: int, rng: np.random.Generator) -> list[int]:
    return _centre_crop_plan(width, height, data.val_resize, data.crop_size)


PLANNERS = {
    "scale_jitter": _plan_scale_jitter,
    "random_resized_crop": _plan_random_resized_crop,
    "pad_crop": _plan_pad_crop,
    "none": _plan_none,
}
assert set(PLANNERS) == set(TRAIN_AUGMENTS), "every train augmentation needs a plan for data.loader=gpu"


class TrainPlanner:
    """(width, height, generator, epoch) -> (plan [12] int64, lighting offset [3] float32), drawn as
    TrainTransform.sample draws them, cropping at the epoch's size (progressive resizing)."""

    def __init__(self, data: DataConfig):
        if data.train_augment not in PLANNERS:
            raise ConfigError(f"data.train_augment={data.train_augment!r} is not one of {', '.join(PLANNERS)}")
        self.data = data
        self.planner = PLANNERS[data.train_augment]
        self.lighting_std = float(data.lighting_std)

    def __call__(self, width: int, height: int, rng: np.random.Generator,
                 epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        plan = torch.tensor(self.planner(data_at_epoch(self.data, epoch), width, height, rng), dtype=torch.int64)
        offset = lighting_shift(self.lighting_std, rng) if self.lighting_std > 0 else torch.zeros(3)
        return plan, offset

    def window(self, plan: torch.Tensor) -> torch.Tensor | None:
        """The pad-and-crop window of a plan (as transforms.PadCrop gives it), None for the rest."""
        if self.data.train_augment != "pad_crop":
            return None
        p = [int(v) for v in plan]
        return pad_crop_window(p[CROP_L], p[CROP_T], p[PAD], p[RES_W], p[RES_H], bool(p[FLIP]))


def eval_plans(mode: str, data: DataConfig, scales: Sequence[int], width: int, height: int) -> list[list[int]]:
    """One plan per test-time view, in eval_views' order (see dtrain.data.eval_views)."""
    if mode == "center":
        return [_centre_crop_plan(width, height, data.val_resize, data.val_crop)]
    if mode == "single-320":
        return [_centre_crop_plan(width, height, R2_SINGLE_CROP, R2_SINGLE_CROP)]
    if mode == "ten-crop":
        rw, rh = shorter_side_size(width, height, data.val_resize)
        s = data.val_crop
        if rw < s or rh < s:
            raise ValueError(f"cannot ten-crop {s}x{s} from a {rw}x{rh} image")
        corners = [(0, 0), (rw - s, 0), (0, rh - s), (rw - s, rh - s)]  # torchvision's TenCrop order
        centre = _centre_crop_plan(width, height, data.val_resize, s)
        crops = [_plan((0, 0, width, height), (rw, rh), 0, (x, y, s, s), False) for x, y in corners] + [centre]
        return crops + [p[:FLIP] + [1] for p in crops]
    if mode == "multi-scale":
        plans = []
        for scale in scales:
            rw, rh = shorter_side_size(width, height, int(scale))
            whole = _plan((0, 0, width, height), (rw, rh), 0, (0, 0, rw, rh), False)
            plans += [whole, whole[:FLIP] + [1]]
        return plans
    raise ConfigError(f"eval.mode={mode!r} is not one of center, ten-crop, multi-scale, single-320")


# ------------------------------------------------------------------------------------------
# On the device
# ------------------------------------------------------------------------------------------


class DeviceNormalize:
    """float pixel levels [B, 3, H, W] (+ per-sample RGB offsets in [0, 1] units) ->
    ((pixels / 255 + offset) - mean) / std in `dtype`, NCHW or channels_last: the same
    multiply-add as normalize.Normalize, on the batch's device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32,
                 channels_last: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float64)
        self.std = torch.tensor(std, dtype=torch.float64)
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, pixels: torch.Tensor, offsets: torch.Tensor | None = None,
                 windows: torch.Tensor | None = None) -> torch.Tensor:
        """With pad-and-crop windows, the padding is 0 after the normalisation (dtrain.data.padding)."""
        batch, channels = pixels.shape[:2]
        device = pixels.device
        scale = (1.0 / (255.0 * self.std)).float().to(device).view(1, channels, 1, 1)
        shift = torch.zeros(batch, channels, dtype=torch.float64) if offsets is None else offsets.double().cpu()
        bias = ((shift - self.mean) / self.std).float().to(device).view(batch, channels, 1, 1)
        out = self._centre(pixels.mul_(scale).add_(bias), windows)
        return out.to(dtype=self.dtype, memory_format=self.memory_format)

    def _centre(self, out: torch.Tensor, windows: torch.Tensor | None) -> torch.Tensor:
        # the per-channel mean is already in the bias
        return out if windows is None else zero_padding(out, windows)


class DevicePerPixelMeanNormalize(DeviceNormalize):
    """data.normalize=per_pixel_mean: as normalize.PerPixelMeanNormalize (per-channel / std, then
    the dataset's mean image, resized to views of another size, subtracted in float32), before the
    cast to `dtype`, so the torch and gpu loaders subtract the same float32 tensor."""

    def __init__(self, mean_image: np.ndarray, std: Sequence[float], dtype: torch.dtype = torch.float32,
                 channels_last: bool = False):
        super().__init__([0.0, 0.0, 0.0], std, dtype, channels_last)
        self.mean_image = ScaledMeanImage(mean_image, self.std)

    def _centre(self, out: torch.Tensor, windows: torch.Tensor | None) -> torch.Tensor:
        return self.mean_image.subtract(out, windows)


def build_device_normalize(data: DataConfig, dtype: torch.dtype = torch.float32,
                           channels_last: bool = False) -> DeviceNormalize:
    """The DeviceNormalize of data.normalize (stats.build_normalize's choice, on the device)."""
    if data.normalize == "per_pixel_mean":
        return DevicePerPixelMeanNormalize(per_pixel_mean(data.root), data.std, dtype, channels_last)
    return DeviceNormalize(data.mean, data.std, dtype, channels_last)
