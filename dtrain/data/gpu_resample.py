"""PIL's bilinear resampling, reproduced bit for bit with torch gathers on any device.

The reference loader resizes with PIL (Image.resize(..., BILINEAR, box=...)). To give the same
pixels, data.loader=gpu computes PIL's filter coefficients exactly (Pillow's Resample.c:
precompute_coeffs + normalize_coeffs_8bpc, 22-bit fixed point) and applies them the way Pillow
does: a horizontal pass rounded to 8 bits, then a vertical pass rounded to 8 bits. Only the
output pixels a crop keeps are computed (each output pixel depends only on its own filter
window), and zero padding is an output position without taps.

Coefficients are built per sample on the CPU (in the DataLoader workers, from the plan and the
manifest's image size); the gathers run on the decoded images' device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .gpu_augment import BOX_H, BOX_L, BOX_T, BOX_W, CROP_H, CROP_L, CROP_T, CROP_W, PAD, RES_H, RES_W

PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed point for 8-bit channels
_HALF = 1 << (PRECISION_BITS - 1)


def axis_coefficients(in_size: int, box0: int, box1: int, out_size: int, start: int, length: int,
                      pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Taps (input index [length, K] int64, fixed-point weight [length, K] int32) of output
    positions start..start+length of the `pad`-padded resize of [box0, box1) to out_size."""
    scale = (box1 - box0) / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # bilinear support
    ksize = int(math.ceil(support)) * 2 + 1
    position = np.arange(start, start + length, dtype=np.int64) - pad
    valid = (position >= 0) & (position < out_size)
    center = box0 + (position + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64)
    taps = xmin[:, None] + np.arange(ksize, dtype=np.int64)[None, :]
    t = np.abs((taps - center[:, None] + 0.5) * (1.0 / filterscale))
    weights = np.where((taps < xmax[:, None]) & (t < 1.0), 1.0 - t, 0.0)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total != 0)
    fixed = np.trunc(weights * (1 << PRECISION_BITS) + np.where(weights < 0, -0.5, 0.5)).astype(np.int64)
    fixed[~valid] = 0
    # int32 weights: 255 * (2**22 + K) + 2**21 stays below 2**31, and int32 gathers run 2.5x faster
    return np.clip(taps, 0, in_size - 1), fixed.astype(np.int32)


def plan_coefficients(plan: Sequence[int] | torch.Tensor, width: int, height: int) -> tuple[np.ndarray, ...]:
    """(x taps, x weights, y taps, y weights) of one plan (see gpu_augment) on a width x height image."""
    p = [int(v) for v in plan]
    x = axis_coefficients(width, p[BOX_L], p[BOX_L] + p[BOX_W], p[RES_W], p[CROP_L], p[CROP_W], p[PAD])
    y = axis_coefficients(height, p[BOX_T], p[BOX_T] + p[BOX_H], p[RES_H], p[CROP_T], p[CROP_H], p[PAD])
    return (*x, *y)


def pad_taps(arrays: list[np.ndarray]) -> torch.Tensor:
    """Stack [L, K_i] tap arrays into [N, L, max K] (extra taps get index 0 / weight 0)."""
    k = max(a.shape[1] for a in arrays)
    out = np.zeros((len(arrays), arrays[0].shape[0], k), dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, :, :a.shape[1]] = a
    return torch.from_numpy(out)


def _round8(acc: torch.Tensor) -> torch.Tensor:
    return ((acc + _HALF) >> PRECISION_BITS).clamp_(0, 255)


def _dot(values: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    return (values * weights).sum(dim, dtype=torch.int32)


def source_rows(y_taps: np.ndarray, y_weights: np.ndarray) -> tuple[int, int]:
    """[first, last) rows of the image the vertical pass reads ((0, 0): every output row is padding).
    Computed on the CPU so the device loop never waits for a value from the device."""
    live = y_taps[y_weights != 0]
    return (int(live.min()), int(live.max()) + 1) if live.size else (0, 0)


def resample(image: torch.Tensor, x_taps: torch.Tensor, x_weights: torch.Tensor,
             y_taps: torch.Tensor, y_weights: torch.Tensor, rows: tuple[int, int]) -> torch.Tensor:
    """uint8 [C, H, W] -> int32 [C, Ly, Lx] pixel levels: horizontal pass, 8-bit rounding,
    vertical pass, 8-bit rounding (Pillow's order). Taps/weights are [L, K] on image's device;
    rows = source_rows(...) of the y taps."""
    first, last = rows
    if last <= first:
        return torch.zeros((image.shape[0], y_taps.shape[0], x_taps.shape[0]), dtype=torch.int32,
                           device=image.device)
    band = image[:, first:last].int()  # only the rows the vertical pass reads
    horizontal = _round8(_dot(band[:, :, x_taps], x_weights, -1))  # [C, rows, Lx]
    rows_read = horizontal[:, (y_taps - first).clamp(0, last - first - 1)]  # [C, Ly, K, Lx]
    return _round8(_dot(rows_read, y_weights[None, :, :, None], 2))  # [C, Ly, Lx]
