"""Training augmentations of the papers, written on PIL and torch.

torchvision cannot be installed beside the CPU torch of this platform (docs/platform.md), so the
few transforms the recipes need are written here, following torchvision's definitions
(shorter-side resize, RandomResizedCrop's sampling) and fb.resnet.torch's lighting.

Every random choice is drawn from a `numpy.random.Generator` passed in by the caller, which
seeds it per sample from (seed, epoch, sample index): the same sample in the same epoch gets the
same augmentation whatever the number of loader workers or where a resumed run starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from dtrain.config import DataConfig
from dtrain.errors import ConfigError

from .auto_augment import parse_auto_augment
from .padding import pad_crop_window
from .resolution import data_at_epoch, largest_train_crop, progressive, train_crop_size
from .stats import build_normalize

# AlexNet's PCA of ImageNet RGB pixels (values in [0, 1]), as used by fb.resnet.torch.
LIGHTING_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
LIGHTING_EIGVEC = torch.tensor([
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
])

RESAMPLE = Image.Resampling.BILINEAR  # PIL's bilinear filter antialiases when it shrinks, like torchvision's

ALL_LOADERS = ("torch", "synthetic", "gpu", "dali", "ffcv")


@dataclass(frozen=True)
class Interpolation:
    """A resampling filter, or several of which each sample draws one (timm's "random"), and the loaders
    that resize with it: the gpu loader reproduces PIL's bilinear filter only (dtrain.data.gpu_resample),
    FFCV's decoders resize with their own filter, DALI has no per-sample choice here."""

    filters: tuple[Image.Resampling, ...]
    loaders: tuple[str, ...]

    def pick(self, rng: np.random.Generator) -> Image.Resampling:
        """The filter of one sample; draws from `rng` only when there is a choice (so bilinear and
        bicubic runs keep the random streams of runs before this option existed)."""
        if len(self.filters) == 1:
            return self.filters[0]
        return self.filters[int(rng.integers(len(self.filters)))]


BILINEAR = Interpolation((Image.Resampling.BILINEAR,), ALL_LOADERS)
BICUBIC = Interpolation((Image.Resampling.BICUBIC,), ("torch", "synthetic", "dali"))
# data.train_interpolation: timm's RandomResizedCropAndInterpolation takes "random" as a choice of these two.
INTERPOLATIONS: dict[str, Interpolation] = {
    "bilinear": BILINEAR,
    "bicubic": BICUBIC,
    "random": Interpolation((Image.Resampling.BILINEAR, Image.Resampling.BICUBIC), ("torch", "synthetic")),
}
# data.val_interpolation: a test image is resized one way (a literal: `dtrain keys` reads it without importing).
VAL_INTERPOLATIONS: dict[str, Interpolation] = {"bilinear": BILINEAR, "bicubic": BICUBIC}


class GeometricAugment(Protocol):
    """image, generator -> augmented image; `placed` also gives the pad-and-crop window (or None)."""

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image: ...

    def placed(self, image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, torch.Tensor | None]: ...


# ------------------------------------------------------------------------------------------
# Deterministic geometry
# ------------------------------------------------------------------------------------------


def resize_shorter_side(image: Image.Image, size: int, resample: Image.Resampling = RESAMPLE) -> Image.Image:
    """Resize so the shorter side is `size`, keeping the aspect ratio (torchvision's Resize(int))."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image  # keeps the original view bit-exact (CIFAR: val_resize == image size)
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    return image.resize(new_size, resample)


def crop(image: Image.Image, left: int, top: int, width: int, height: int) -> Image.Image:
    return image.crop((left, top, left + width, top + height))


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if width < size or height < size:
        raise ValueError(f"cannot centre-crop {size}x{size} from a {width}x{height} image")
    # torchvision rounds the offset to the nearest pixel.
    return crop(image, int(round((width - size) / 2.0)), int(round((height - size) / 2.0)), size, size)


def crop_origin(width: int, height: int, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """(left, top) of a random size x size crop, uniform over the positions that fit."""
    if width < size or height < size:
        raise ValueError(f"cannot crop {size}x{size} from a {width}x{height} image")
    return int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))


def random_crop(image: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    return crop(image, *crop_origin(image.width, image.height, size, rng), size, size)


def hflip(image: Image.Image) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def draw_flip(rng: np.random.Generator, enabled: bool) -> bool:
    # Draw even when disabled so that flip=false changes nothing but the flip.
    flip = rng.random() < 0.5
    return enabled and flip


def maybe_flip(image: Image.Image, rng: np.random.Generator, enabled: bool) -> Image.Image:
    return hflip(image) if draw_flip(rng, enabled) else image


def zero_pad(image: Image.Image, pad: int) -> Image.Image:
    if pad <= 0:
        return image
    width, height = image.size
    canvas = Image.new(image.mode, (width + 2 * pad, height + 2 * pad), 0)
    canvas.paste(image, (pad, pad))
    return canvas


# ------------------------------------------------------------------------------------------
# Random geometric augmentations (one per data.train_augment)
# ------------------------------------------------------------------------------------------


class _Unpadded:
    """An augmentation that pads nothing: its samples carry no window (dtrain.data.padding)."""

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        raise NotImplementedError  # each augmentation below draws its own crop

    def placed(self, image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, torch.Tensor | None]:
        return self(image, rng), None


@dataclass(frozen=True)
class ScaleJitter(_Unpadded):
    """R1: shorter side resized to a random integer in [low, high], random crop, flip."""

    low: int
    high: int
    crop_size: int
    flip: bool
    interpolation: Interpolation = BILINEAR

    def resize(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        size = int(rng.integers(self.low, self.high + 1))
        return resize_shorter_side(image, size, self.interpolation.pick(rng))

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        image = random_crop(self.resize(image, rng), self.crop_size, rng)
        return maybe_flip(image, rng, self.flip)


def random_resized_crop_box(
    width: int, height: int, scale: Sequence[float], ratio: Sequence[float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(left, top, crop_width, crop_height) as torchvision's RandomResizedCrop.get_params.

    Area fraction uniform in `scale`, aspect ratio log-uniform in `ratio`, 10 tries, then the
    largest centred crop whose aspect ratio lies in `ratio`.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return left, top, crop_w, crop_h
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_w, crop_h = int(round(height * max(ratio))), height
    else:
        crop_w, crop_h = width, height
    return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h


@dataclass(frozen=True)
class RandomResizedCrop(_Unpadded):
    """R2 "scale + aspect ratio" (Inception-style) crop, resized to crop_size, then flip."""

    scale: tuple[float, float]
    ratio: tuple[float, float]
    crop_size: int
    flip: bool
    interpolation: Interpolation = BILINEAR

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        left, top, w, h = random_resized_crop_box(image.width, image.height, self.scale, self.ratio, rng)
        size = (self.crop_size, self.crop_size)
        image = image.resize(size, self.interpolation.pick(rng), box=(left, top, left + w, top + h))
        return maybe_flip(image, rng, self.flip)


@dataclass(frozen=True)
class PadCrop:
    """CIFAR (R1 4.2): zero-pad by `pad` pixels, random crop_size crop, flip. The sample's window
    (where the crop lies in the image) lets the normalisation subtract the mean first and make the
    padding 0 in the network's input (dtrain.data.padding)."""

    pad: int
    crop_size: int
    flip: bool

    def placed(self, image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, torch.Tensor]:
        padded = zero_pad(image, self.pad)
        left, top = crop_origin(padded.width, padded.height, self.crop_size, rng)
        flip = draw_flip(rng, self.flip)
        view = crop(padded, left, top, self.crop_size, self.crop_size)
        window = pad_crop_window(left, top, max(self.pad, 0), image.width, image.height, flip)
        return hflip(view) if flip else view, window

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        return self.placed(image, rng)[0]


@dataclass(frozen=True)
class NoAugment(_Unpadded):
    """Shorter side to val_resize and a centre crop_size crop: the same image every epoch."""

    resize: int
    crop_size: int
    interpolation: Interpolation = BILINEAR

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        return center_crop(resize_shorter_side(image, self.resize, self.interpolation.pick(rng)), self.crop_size)


TRAIN_AUGMENTS: dict[str, Callable[[DataConfig], GeometricAugment]] = {
    "scale_jitter": lambda d: ScaleJitter(d.scale_range[0], d.scale_range[1], d.crop_size, d.flip,
                                          INTERPOLATIONS[d.train_interpolation]),
    "random_resized_crop": lambda d: RandomResizedCrop(
        (d.rrc_scale[0], d.rrc_scale[1]), (d.rrc_ratio[0], d.rrc_ratio[1]), d.crop_size, d.flip,
        INTERPOLATIONS[d.train_interpolation]),
    "pad_crop": lambda d: PadCrop(d.pad, d.crop_size, d.flip),  # no resize
    "none": lambda d: NoAugment(d.val_resize, d.crop_size, INTERPOLATIONS[d.train_interpolation]),
}


# ------------------------------------------------------------------------------------------
# Tensor stages: uint8 pixels in the workers; [0, 1] float, PCA lighting and normalisation as one
# batched multiply-add on the training device (4x less data to move, no float math per sample
# in Python; DALI and FFCV also normalise on the device).
# ------------------------------------------------------------------------------------------


def to_pixels(image: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 HWC RGB tensor."""
    return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> float32 CHW in [0, 1]."""
    return to_pixels(image).permute(2, 0, 1).float().div_(255.0)


def lighting_shift(std: float, rng: np.random.Generator) -> torch.Tensor:
    """Per-channel RGB offset of AlexNet's PCA lighting: eigvec @ (alpha * eigval), alpha ~ N(0, std)."""
    alpha = torch.from_numpy(rng.normal(0.0, std, size=3).astype(np.float32))
    return LIGHTING_EIGVEC @ (alpha * LIGHTING_EIGVAL)


class TrainTransform:
    """PIL image + per-sample generator -> (uint8 HWC pixels, float32 [3] lighting offset);
    `normalize` turns a stacked batch of them into the network's input."""

    def __init__(self, data: DataConfig):
        if data.train_augment not in TRAIN_AUGMENTS:
            raise ConfigError(
                f"data.train_augment={data.train_augment!r} is not one of {', '.join(TRAIN_AUGMENTS)}")
        self.geometric = TRAIN_AUGMENTS[data.train_augment](data)
        self.auto_augment = parse_auto_augment(data.auto_augment, data.mean)
        self.lighting_std = float(data.lighting_std)
        self.normalize = build_normalize(data)

    def sample(self, image: Image.Image, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor,
                                                                         torch.Tensor | None]:
        """(uint8 pixels, lighting offset, pad-and-crop window or None)."""
        view, window = self.geometric.placed(image.convert("RGB"), rng)
        if self.auto_augment is not None:
            # torchvision's order: after the crop and flip, on the pixels. Its ops move pad_crop's
            # padding too, so that is black pixels here (as torchvision pads), not 0 after normalising.
            view, window = self.auto_augment(view, rng), None
        offset = lighting_shift(self.lighting_std, rng) if self.lighting_std > 0 else torch.zeros(3)
        return to_pixels(view), offset, window

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        """One normalised float32 CHW image (what a loader batch holds for this sample)."""
        pixels, offset, window = self.sample(image, rng)
        return self.normalize(pixels[None], offset[None], None if window is None else window[None])[0]


def check_train_geometry(data: DataConfig, min_width: int, min_height: int) -> None:
    """Refuse, before any worker starts, an augmentation the smallest image cannot take (at the
    largest crop of any epoch, with progressive resizing)."""
    short = min(min_width, min_height)
    augment, size = data.train_augment, largest_train_crop(data)
    crop = f"data.crop_size={size}" if not progressive(data) else f"the largest progressive-resizing crop ({size})"
    if augment == "scale_jitter" and data.scale_range[0] < size:
        raise ConfigError(
            f"data.scale_range starts at {data.scale_range[0]}, below {crop}: "
            "the random crop would not fit; raise scale_range or lower the crop")
    if augment == "pad_crop" and short + 2 * data.pad < size:
        raise ConfigError(
            f"{crop} does not fit in the smallest image ({min_width}x{min_height}) "
            f"padded by data.pad={data.pad}; lower the crop or raise pad")
    if augment == "none" and data.val_resize < size:
        raise ConfigError(
            f"data.train_augment=none crops {crop} from a shorter side of "
            f"data.val_resize={data.val_resize}; make val_resize >= the crop")


class EpochTransforms:
    """epoch -> the TrainTransform of that epoch's crop size (progressive resizing,
    dtrain.data.resolution), one per size, built on first use in each worker process; without
    progressive resizing, the one TrainTransform of data.crop_size."""

    def __init__(self, data: DataConfig):
        self.data = data
        first = TrainTransform(data_at_epoch(data, 0))  # checks data.train_augment before any worker starts
        self.normalize = first.normalize  # the normalisation does not depend on the crop size
        self._by_size = {train_crop_size(data, 0): first}

    def __call__(self, epoch: int) -> TrainTransform:
        size = train_crop_size(self.data, epoch)
        if size not in self._by_size:
            self._by_size[size] = TrainTransform(data_at_epoch(self.data, epoch))
        return self._by_size[size]
