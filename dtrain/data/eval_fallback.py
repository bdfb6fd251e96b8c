"""Evaluation modes a fast loader lacks fall back to the torch loader over the same prepared dataset.

FFCV decodes one view per image (center, single-320); DALI has no whole-image multi-scale views.
Asked for another eval.mode, their eval builders return the torch loader's (reading the webdataset
shards `dtrain prepare` writes by default) and say so in one line, so `dtrain eval --mode ten-crop`
and `dtrain reproduce` work with any data.loader. The README's loader table lists the modes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from dtrain.config import DataConfig
from dtrain.data import LOADERS, LoaderBuilders  # the registry; the package never imports this module
from dtrain.errors import ConfigError


def with_torch_fallback(name: str, modes: tuple[str, ...], native: Callable[..., object]) -> Callable[..., object]:
    """An eval builder: `native` for `modes`, the torch loader's eval for every other mode."""

    def build(data: DataConfig, *, mode: str, **kwargs):
        if mode in modes:
            return native(data, mode=mode, **kwargs)
        print(f"note: data.loader={name} has no eval.mode={mode}; evaluating with the torch loader "
              "(same prepared dataset)", file=sys.stderr)
        torch_loader = LOADERS["torch"]
        assert isinstance(torch_loader, LoaderBuilders)  # registered as builders, not as a module path
        return torch_loader.eval(data, mode=mode, **kwargs)

    return build


def refuse_per_pixel_mean(data: DataConfig, name: str) -> None:
    """Loaders that normalise inside a fused per-channel kernel cannot subtract a mean image (nor
    pad after subtracting it, as R1's CIFAR pipeline does)."""
    if data.normalize == "per_pixel_mean":
        raise ConfigError(f"data.loader={name} normalises per channel only; use data.loader=torch, gpu or ffcv "
                          "for R1's per-pixel mean (subtracted before the CIFAR padding), or set "
                          "data.normalize=channel")
