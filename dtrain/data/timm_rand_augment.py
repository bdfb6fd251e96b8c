"""timm's RandAugment (`data.auto_augment=rand-m7-mstd0.5-inc1` and the like): the variant with
magnitude noise that "ResNet strikes back" (Wightman et al. 2021, section 2 and Table 1) trains with,
written as timm's config strings.

This follows timm/data/auto_augment.py (AugmentOp, rand_augment_transform, _RAND_TRANSFORMS /
_RAND_INCREASING_TRANSFORMS and their *_level_to_arg functions), which differs from torchvision's
RandAugment (dtrain.data.auto_augment, `ra-mM`): magnitudes on a 0..10 scale (M/10 of each op's
range), 15 ops without Identity but with Invert and SolarizeAdd, each applied with probability 1/2,
optional Gaussian magnitude noise (`mstd`; > 100: uniform in [0, M]) clipped to [0, 10] (`mmax`
changes the bound), `inc1` for the ops whose severity increases with M, a random bilinear or bicubic
resampling per op and the dataset's mean colour as fill (timm's img_mean). Not implemented: the op
weights `w` (refused by the parser).

Every draw comes from the sample's generator, a fixed 6 draws per op (op, apply, noise, uniform,
sign, resampling), so the augmentation is a function of (seed, epoch, sample index).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from dtrain.errors import ConfigError

LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM: M is in tenths of each op's range
APPLY_PROB = 0.5  # rand_augment_ops(prob=0.5)
TRANSLATE_PCT = 0.45  # _translate_rel_level_to_arg's default
RESAMPLINGS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)  # timm's _RANDOM_INTERPOLATION
DEFAULT_FILL = (128, 128, 128)  # timm's _FILL, used when no mean is given

Fill = tuple[int, int, int]
# image, level (0..10 after noise), negate, resampling, fill -> image
TimmOp = Callable[[Image.Image, float, bool, Image.Resampling, Fill], Image.Image]


def _signed(value: float, negate: bool) -> float:
    return -value if negate else value


def _affine(image: Image.Image, matrix: tuple[float, ...], resample: Image.Resampling, fill: Fill) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample, fillcolor=fill)


def _enhance(kind: type[ImageEnhance._Enhance], increasing: bool) -> TimmOp:
    def op(image: Image.Image, level: float, negate: bool, resample: Image.Resampling, fill: Fill) -> Image.Image:
        if increasing:  # _enhance_increasing_level_to_arg: 1 +- 0.9 * level / 10, at least 0.1
            factor = max(0.1, 1.0 + _signed(level / LEVEL_DENOM * 0.9, negate))
        else:  # _enhance_level_to_arg: 0.1 .. 1.9
            factor = level / LEVEL_DENOM * 1.8 + 0.1
        return kind(image).enhance(factor)  # type: ignore[call-arg]
    return op


def _posterize(increasing: bool) -> TimmOp:
    def op(image: Image.Image, level: float, negate: bool, resample: Image.Resampling, fill: Fill) -> Image.Image:
        bits = int(level / LEVEL_DENOM * 4)
        bits = 4 - bits if increasing else bits
        if bits >= 8:
            return image
        # PIL's posterize LUT, written out: Pillow >= 11 refuses the 0 bits (a black image) timm reaches at M=10
        mask = ~(2 ** (8 - bits) - 1)
        return image.point([i & mask for i in range(256)] * len(image.getbands()))
    return op


def _solarize(increasing: bool) -> TimmOp:
    def op(image: Image.Image, level: float, negate: bool, resample: Image.Resampling, fill: Fill) -> Image.Image:
        threshold = int(level / LEVEL_DENOM * 256)
        return ImageOps.solarize(image, 256 - threshold if increasing else threshold)
    return op


def _solarize_add(image: Image.Image, level: float, negate: bool, resample: Image.Resampling,
                  fill: Fill) -> Image.Image:
    add = int(level / LEVEL_DENOM * 110)
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]
    return image.point(lut * len(image.getbands()))


def _rotate(image: Image.Image, level: float, negate: bool, resample: Image.Resampling, fill: Fill) -> Image.Image:
    return image.rotate(_signed(level / LEVEL_DENOM * 30.0, negate), resample, fillcolor=fill)


def _shear(axis: int) -> TimmOp:
    def op(image: Image.Image, level: float, negate: bool, resample: Image.Resampling, fill: Fill) -> Image.Image:
        factor = _signed(level / LEVEL_DENOM * 0.3, negate)
        matrix = (1.0, factor, 0.0, 0.0, 1.0, 0.0) if axis == 0 else (1.0, 0.0, 0.0, factor, 1.0, 0.0)
        return _affine(image, matrix, resample, fill)
    return op


def _translate_rel(axis: int) -> TimmOp:
    def op(image: Image.Image, level: float, negate: bool, resample: Image.Resampling, fill: Fill) -> Image.Image:
        pixels = _signed(level / LEVEL_DENOM * TRANSLATE_PCT, negate) * image.size[axis]
        matrix = (1.0, 0.0, pixels, 0.0, 1.0, 0.0) if axis == 0 else (1.0, 0.0, 0.0, 0.0, 1.0, pixels)
        return _affine(image, matrix, resample, fill)
    return op


def _no_level(function: Callable[[Image.Image], Image.Image]) -> TimmOp:
    return lambda image, level, negate, resample, fill: function(image)


def _ops(increasing: bool) -> dict[str, TimmOp]:
    """_RAND_TRANSFORMS (increasing=False) or _RAND_INCREASING_TRANSFORMS, in timm's order."""
    return {
        "AutoContrast": _no_level(ImageOps.autocontrast),
        "Equalize": _no_level(ImageOps.equalize),
        "Invert": _no_level(ImageOps.invert),
        "Rotate": _rotate,
        "Posterize": _posterize(increasing),
        "Solarize": _solarize(increasing),
        "SolarizeAdd": _solarize_add,
        "Color": _enhance(ImageEnhance.Color, increasing),
        "Contrast": _enhance(ImageEnhance.Contrast, increasing),
        "Brightness": _enhance(ImageEnhance.Brightness, increasing),
        "Sharpness": _enhance(ImageEnhance.Sharpness, increasing),
        "ShearX": _shear(0),
        "ShearY": _shear(1),
        "TranslateXRel": _translate_rel(0),
        "TranslateYRel": _translate_rel(1),
    }


OPS, INCREASING_OPS = _ops(False), _ops(True)


@dataclass(frozen=True)
class TimmDraw:
    name: str
    applied: bool
    level: float  # after noise and clipping
    negate: bool
    resample: Image.Resampling


@dataclass(frozen=True)
class TimmRandAugment:
    magnitude: int = 10
    num_ops: int = 2
    magnitude_std: float = 0.0  # inf: uniform in [0, magnitude]
    magnitude_max: float = LEVEL_DENOM
    increasing: bool = False
    fill: Fill = DEFAULT_FILL

    loaders = ("torch", "synthetic")

    def _level(self, rng: np.random.Generator) -> float:
        noise, uniform = rng.standard_normal(), rng.random()  # both drawn: a fixed count per op
        if self.magnitude_std == float("inf"):
            level = self.magnitude * uniform
        else:
            level = self.magnitude + self.magnitude_std * noise
        return float(max(0.0, min(level, self.magnitude_max)))

    def draws(self, image: Image.Image, rng: np.random.Generator) -> list[TimmDraw]:
        names = list(OPS)
        out = []
        for _ in range(self.num_ops):  # chosen with replacement, uniformly (no op weights)
            name = names[int(rng.integers(len(names)))]
            applied = rng.random() < APPLY_PROB
            level = self._level(rng)
            negate = rng.random() < 0.5
            resample = RESAMPLINGS[int(rng.integers(len(RESAMPLINGS)))]
            out.append(TimmDraw(name, bool(applied), level, bool(negate), resample))
        return out

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        ops = INCREASING_OPS if self.increasing else OPS
        for draw in self.draws(image, rng):
            if draw.applied:
                image = ops[draw.name](image, draw.level, draw.negate, draw.resample, self.fill)
        return image


_SECTION = re.compile(r"([a-z]+)(\d.*)")
# timm's section keys and how it reads their values (rand_augment_transform)
SECTIONS: dict[str, Callable[[str], float]] = {"m": int, "n": int, "mstd": float, "mmax": int, "inc": int}


def _sections(spec: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for section in spec.split("-")[1:]:
        match = _SECTION.fullmatch(section)
        if match is None or match.group(1) not in SECTIONS:
            raise ConfigError(f"data.auto_augment={spec!r}: timm's RandAugment section {section!r} is not one of "
                              "mM, nN, mstdS, mmaxX, incB (op weights w are not implemented)")
        key, text = match.groups()
        try:
            values[key] = SECTIONS[key](text)
        except ValueError:
            raise ConfigError(f"data.auto_augment={spec!r}: section {section!r} needs a number, e.g. "
                              "rand-m9-mstd0.5") from None
    return values


def parse_timm_rand(spec: str, mean: Sequence[float] | None = None) -> TimmRandAugment:
    """timm's rand_augment_transform config string: rand[-mM][-nN][-mstdS][-mmaxX][-incB]."""
    values = _sections(spec)
    std = values.get("mstd", 0.0)
    fill = DEFAULT_FILL if mean is None else (min(255, round(255 * mean[0])), min(255, round(255 * mean[1])),
                                              min(255, round(255 * mean[2])))
    augment = TimmRandAugment(magnitude=int(values.get("m", LEVEL_DENOM)), num_ops=int(values.get("n", 2)),
                              magnitude_std=float("inf") if std > 100 else std,
                              magnitude_max=values.get("mmax", LEVEL_DENOM), increasing=bool(values.get("inc", 0)),
                              fill=fill)
    if augment.num_ops < 1 or augment.magnitude_std < 0:
        raise ConfigError(f"data.auto_augment={spec!r}: timm's RandAugment needs n >= 1 and mstd >= 0")
    return augment
