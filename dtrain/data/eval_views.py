"""Test-time views of one image, by eval.mode; the model's softmax scores are averaged over them.

    center       shorter side -> data.val_resize, centre data.val_crop crop (1 view). With
                 CIFAR-sized data (val_resize == val_crop == image size) it is the original image.
    ten-crop     R1: the 4 corners and the centre at val_crop from the val_resize image, and
                 their horizontal flips (10 views; view 4 is the `center` view).
    multi-scale  R1 fully-convolutional: the whole image with its shorter side at each of
                 eval.scales, and its flip (2 x len(scales) views of different sizes).
    single-320   R2: shorter side 320, centre 320x320 crop (1 view).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from PIL import Image

from dtrain.config import DataConfig
from dtrain.errors import ConfigError

from .stats import build_normalize
from .transforms import RESAMPLE, VAL_INTERPOLATIONS, center_crop, crop, hflip, resize_shorter_side, to_pixels

R2_SINGLE_CROP = 320  # R2 Table 5: shorter side 320, 320x320 centre crop


class Views(Protocol):
    """An eval.mode's views of one image; `fixed_size`: all of one size whatever the image."""

    fixed_size: bool

    def __call__(self, image: Image.Image) -> list[Image.Image]: ...


@dataclass(frozen=True)
class CenterView:
    resize: int
    crop_size: int
    resample: Image.Resampling = RESAMPLE  # data.val_interpolation's filter
    fixed_size = True  # every image gives views of one size, so images can be batched

    def __call__(self, image: Image.Image) -> list[Image.Image]:
        return [center_crop(resize_shorter_side(image, self.resize, self.resample), self.crop_size)]


@dataclass(frozen=True)
class TenCrop:
    resize: int
    crop_size: int
    resample: Image.Resampling = RESAMPLE
    fixed_size = True

    def __call__(self, image: Image.Image) -> list[Image.Image]:
        image = resize_shorter_side(image, self.resize, self.resample)
        width, height, size = image.width, image.height, self.crop_size
        if width < size or height < size:
            raise ValueError(f"cannot ten-crop {size}x{size} from a {width}x{height} image")
        # torchvision's TenCrop order: top-left, top-right, bottom-left, bottom-right, centre.
        crops = [
            crop(image, 0, 0, size, size),
            crop(image, width - size, 0, size, size),
            crop(image, 0, height - size, size, size),
            crop(image, width - size, height - size, size, size),
            center_crop(image, size),
        ]
        return crops + [hflip(c) for c in crops]


@dataclass(frozen=True)
class MultiScale:
    scales: tuple[int, ...]
    resample: Image.Resampling = RESAMPLE
    fixed_size = False  # sizes follow each image's aspect ratio

    def __call__(self, image: Image.Image) -> list[Image.Image]:
        views = []
        for scale in self.scales:
            resized = resize_shorter_side(image, scale, self.resample)
            views += [resized, hflip(resized)]
        return views


def _filter(data: DataConfig) -> Image.Resampling:
    return VAL_INTERPOLATIONS[data.val_interpolation].filters[0]


EVAL_VIEWS: dict[str, Callable[[DataConfig, Sequence[int]], Views]] = {
    "center": lambda d, scales: CenterView(d.val_resize, d.val_crop, _filter(d)),
    "ten-crop": lambda d, scales: TenCrop(d.val_resize, d.val_crop, _filter(d)),
    "multi-scale": lambda d, scales: MultiScale(tuple(int(s) for s in scales), _filter(d)),
    "single-320": lambda d, scales: CenterView(R2_SINGLE_CROP, R2_SINGLE_CROP, _filter(d)),
}

# The config keys each eval.mode's views read (besides the image): a change of any other key
# leaves that mode's views as they are (single-320 fixes its geometry, multi-scale reads only the
# scales; every mode resizes with data.val_interpolation), which `dtrain reproduce` uses to name
# only real changes to a paper's test protocol.
VIEW_KEYS: dict[str, tuple[str, ...]] = {
    "center": ("data.val_resize", "data.val_crop", "data.val_interpolation"),
    "ten-crop": ("data.val_resize", "data.val_crop", "data.val_interpolation"),
    "multi-scale": ("eval.scales", "data.val_interpolation"),
    "single-320": ("data.val_interpolation",),
}
assert set(VIEW_KEYS) == set(EVAL_VIEWS), "every eval.mode names the keys its views read"
# The eval.modes whose views include their horizontal flips: eval.flip_tta adds nothing to them.
FLIPPED_MODES = ("ten-crop", "multi-scale")


class EvalTransform:
    """PIL image -> list of uint8 HWC views; `normalize` turns a stacked batch of one view into
    the network's input."""

    def __init__(self, data: DataConfig, mode: str, scales: Sequence[int]):
        if mode not in EVAL_VIEWS:
            raise ConfigError(f"eval.mode={mode!r} is not one of {', '.join(EVAL_VIEWS)}")
        if mode == "multi-scale" and not scales:
            raise ConfigError("eval.mode=multi-scale needs eval.scales, e.g. [224, 256, 384, 480, 640]")
        if mode in ("center", "ten-crop") and data.val_resize < data.val_crop:
            raise ConfigError(
                f"data.val_resize={data.val_resize} is smaller than data.val_crop={data.val_crop}; "
                "make val_resize >= val_crop")
        self.views = EVAL_VIEWS[mode](data, scales)
        self.fixed_size = self.views.fixed_size
        self.normalize = build_normalize(data)

    def pixels(self, image: Image.Image) -> list[torch.Tensor]:
        return [to_pixels(view) for view in self.views(image.convert("RGB"))]

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        """Normalised float32 CHW views of one image."""
        return [self.normalize(view[None])[0] for view in self.pixels(image)]
