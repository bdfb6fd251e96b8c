"""TrivialAugment-wide and RandAugment on the PIL training image (the `data.auto_augment` key).

- `ta_wide`: TrivialAugment (Müller & Hutter 2021, "TrivialAugment: Tuning-free Yet State-of-the-Art
  Data Augmentation", section 3, the "wide" space of Table 1): one op drawn uniformly from 14, at a
  magnitude bin drawn uniformly from 31. torchvision's ResNet-50 IMAGENET1K_V2 recipe
  (`--auto-augment ta_wide`).
- `ra-mM[-nN]`: RandAugment (Cubuk et al. 2020, "RandAugment: Practical automated data augmentation
  with a reduced search space", section 3) as torchvision has it (`--auto-augment ra
  --ra-magnitude M`): N ops (default 2) drawn uniformly with replacement, each at the fixed
  magnitude bin M of 31 (0..30).
- `rand-...`: timm's RandAugment, with timm's config string and semantics (dtrain.data.timm_rand_augment).

This follows torchvision/transforms/autoaugment.py (TrivialAugmentWide, RandAugment and _apply_op,
torchvision >= 0.13) for PIL images: the same op lists in the same order, the same magnitude bins
(`num_magnitude_bins=31`, computed with the same torch expressions), signed magnitudes negated with
probability 1/2, and the same PIL calls (ImageEnhance, ImageOps, Image.transform/rotate). Geometric ops
resample bilinearly, as torchvision's reference recipe asks (`--interpolation bilinear`), and fill with
black (torchvision's fill=None).

Every draw comes from the sample's generator (seeded by (seed, epoch, sample index), see
dtrain.data.transforms), a fixed 3 draws per op whatever the op, so a sample's augmentation is
the same whatever the worker count or where a resumed run starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from dtrain.errors import ConfigError

from .timm_rand_augment import TimmRandAugment, parse_timm_rand

NUM_MAGNITUDE_BINS = 31  # torchvision's default for both
RESAMPLE = Image.Resampling.BILINEAR
FILL = (0, 0, 0)  # torchvision's fill=None: black outside the moved image
RAND_DEFAULT_OPS = 2  # torchvision's RandAugment(num_ops=2), timm's default layer count

# PIL image, magnitude -> image (torchvision's _apply_op, PIL branch)
OpFunction = Callable[[Image.Image, float], Image.Image]


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    """torchvision's F.affine on PIL: the inverse matrix, output pixel -> input pixel."""
    return image.transform(image.size, Image.Transform.AFFINE, matrix, RESAMPLE, fillcolor=FILL)


# torchvision shears by (1, tan(atan(m))) about the origin (center=[0, 0]), i.e. by m; translates by
# int(m) pixels (truncated toward zero after the sign is applied).
OPS: dict[str, OpFunction] = {
    "Identity": lambda image, m: image,
    "ShearX": lambda image, m: _affine(image, (1.0, m, 0.0, 0.0, 1.0, 0.0)),
    "ShearY": lambda image, m: _affine(image, (1.0, 0.0, 0.0, m, 1.0, 0.0)),
    "TranslateX": lambda image, m: _affine(image, (1.0, 0.0, float(-int(m)), 0.0, 1.0, 0.0)),
    "TranslateY": lambda image, m: _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, float(-int(m)))),
    "Rotate": lambda image, m: image.rotate(m, RESAMPLE, expand=False, fillcolor=FILL),
    "Brightness": lambda image, m: ImageEnhance.Brightness(image).enhance(1.0 + m),
    "Color": lambda image, m: ImageEnhance.Color(image).enhance(1.0 + m),
    "Contrast": lambda image, m: ImageEnhance.Contrast(image).enhance(1.0 + m),
    "Sharpness": lambda image, m: ImageEnhance.Sharpness(image).enhance(1.0 + m),
    "Posterize": lambda image, m: ImageOps.posterize(image, int(m)),
    # torchvision passes the float threshold (inverts values >= m); for integer pixels that is ceil(m)
    "Solarize": lambda image, m: ImageOps.solarize(image, math.ceil(m)),
    "AutoContrast": lambda image, m: ImageOps.autocontrast(image),
    "Equalize": lambda image, m: ImageOps.equalize(image),
}


@dataclass(frozen=True)
class OpRange:
    """An op's magnitude bins (empty: the op takes none) and whether a draw may negate them."""

    magnitudes: tuple[float, ...]
    signed: bool


def _bins(high: float, num_bins: int) -> tuple[float, ...]:
    return tuple(torch.linspace(0.0, high, num_bins).tolist())  # float32, as torchvision's bins


def _posterize_bins(num_bins: int, steps: int) -> tuple[float, ...]:
    return tuple(float(b) for b in (8 - (torch.arange(num_bins) / ((num_bins - 1) / steps)).round().int()).tolist())


def _op_space(num_bins: int, *, shear: float, translate_x: float, translate_y: float, rotate: float,
              enhance: float, posterize_steps: int) -> dict[str, OpRange]:
    """The 14 ops of torchvision's _augmentation_space, in its order; the two policies differ only in
    the largest magnitude of each op and how far Posterize reduces the bits."""
    enhance_bins = _bins(enhance, num_bins)
    return {
        "Identity": OpRange((), False),
        "ShearX": OpRange(_bins(shear, num_bins), True),
        "ShearY": OpRange(_bins(shear, num_bins), True),
        "TranslateX": OpRange(_bins(translate_x, num_bins), True),
        "TranslateY": OpRange(_bins(translate_y, num_bins), True),
        "Rotate": OpRange(_bins(rotate, num_bins), True),
        "Brightness": OpRange(enhance_bins, True),
        "Color": OpRange(enhance_bins, True),
        "Contrast": OpRange(enhance_bins, True),
        "Sharpness": OpRange(enhance_bins, True),
        "Posterize": OpRange(_posterize_bins(num_bins, posterize_steps), False),
        "Solarize": OpRange(tuple(torch.linspace(255.0, 0.0, num_bins).tolist()), False),
        "AutoContrast": OpRange((), False),
        "Equalize": OpRange((), False),
    }


@cache
def ta_wide_space(num_bins: int = NUM_MAGNITUDE_BINS) -> dict[str, OpRange]:
    """TrivialAugmentWide._augmentation_space."""
    return _op_space(num_bins, shear=0.99, translate_x=32.0, translate_y=32.0, rotate=135.0, enhance=0.99,
                     posterize_steps=6)


@lru_cache(maxsize=64)  # one per image size (a few: the crop size)
def rand_augment_space(width: int, height: int, num_bins: int = NUM_MAGNITUDE_BINS) -> dict[str, OpRange]:
    """RandAugment._augmentation_space (translations scale with the image: 150/331 of it)."""
    return _op_space(num_bins, shear=0.3, translate_x=150.0 / 331.0 * width, translate_y=150.0 / 331.0 * height,
                     rotate=30.0, enhance=0.9, posterize_steps=4)


@dataclass(frozen=True)
class OpDraw:
    """One applied op: its name and signed magnitude (0.0 for the magnitude-free ops)."""

    name: str
    magnitude: float


def _draw(space: dict[str, OpRange], rng: np.random.Generator, fixed_bin: int | None) -> OpDraw:
    # Always 3 draws (op, bin, sign), so that the generator's position does not depend on the op.
    names = list(space)
    name = names[int(rng.integers(len(names)))]
    drawn_bin, negate = int(rng.integers(NUM_MAGNITUDE_BINS)), bool(rng.integers(2))
    op = space[name]
    if not op.magnitudes:
        return OpDraw(name, 0.0)
    magnitude = op.magnitudes[drawn_bin if fixed_bin is None else fixed_bin]
    return OpDraw(name, -magnitude if op.signed and negate else magnitude)


def apply_op(image: Image.Image, draw: OpDraw) -> Image.Image:
    return OPS[draw.name](image, draw.magnitude)


TORCHVISION_LOADERS = ("torch", "synthetic", "dali")  # dali: with its auto_aug ops (dtrain.data.dali_loader)


@dataclass(frozen=True)
class TrivialAugmentWide:
    loaders = TORCHVISION_LOADERS

    def draws(self, image: Image.Image, rng: np.random.Generator) -> list[OpDraw]:
        return [_draw(ta_wide_space(), rng, None)]

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        return apply_op(image, self.draws(image, rng)[0])


@dataclass(frozen=True)
class RandAugment:
    magnitude: int  # bin 0..30
    num_ops: int = RAND_DEFAULT_OPS

    loaders = TORCHVISION_LOADERS

    def draws(self, image: Image.Image, rng: np.random.Generator) -> list[OpDraw]:
        space = rand_augment_space(image.width, image.height)
        return [_draw(space, rng, self.magnitude) for _ in range(self.num_ops)]

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        for draw in self.draws(image, rng):
            image = apply_op(image, draw)
        return image


AutoAugment = TrivialAugmentWide | RandAugment | TimmRandAugment
_RA_SPEC = re.compile(r"ra-m(\d+)(?:-n(\d+))?")
SPEC_HELP = ("none | ta_wide | ra-mM[-nN] (torchvision's RandAugment: magnitude bin M in 0..30, N ops, default 2) "
             "| rand-mM[-nN][-mstdS][-incB] (timm's RandAugment string)")


def parse_auto_augment(spec: str, mean: Sequence[float] | None = None) -> AutoAugment | None:
    """`data.auto_augment` -> the augmentation (None: off); a one-line ConfigError for a bad spec.
    `mean` (data.mean): the fill of timm's ops."""
    if spec == "none":
        return None
    if spec == "ta_wide":
        return TrivialAugmentWide()
    if spec == "rand" or spec.startswith("rand-"):
        return parse_timm_rand(spec, mean)
    match = _RA_SPEC.fullmatch(spec)
    if match is None:
        raise ConfigError(f"data.auto_augment={spec!r} is not one of {SPEC_HELP}")
    magnitude, num_ops = int(match.group(1)), int(match.group(2) or RAND_DEFAULT_OPS)
    if magnitude >= NUM_MAGNITUDE_BINS or num_ops < 1:
        raise ConfigError(f"data.auto_augment={spec!r}: RandAugment needs a magnitude bin M in "
                          f"0..{NUM_MAGNITUDE_BINS - 1} and at least 1 op (e.g. ra-m9-n2)")
    return RandAugment(magnitude, num_ops)
