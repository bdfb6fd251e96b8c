"""Random erasing (Zhong et al. 2017, "Random Erasing Data Augmentation", Alg. 1) of a device batch.

Each image, with probability `prob`, gets one box set to 0: in the network's input (after the
normalisation), which is the dataset's mean colour, as torchvision's RandomErasing(value=0) does
after Normalize. The box is drawn as torchvision draws it: up to 10 attempts of an area fraction
uniform in `scale` and an aspect ratio h/w log-uniform in `ratio`, rounded to pixels; the first
attempt that fits inside the image is used, and an image where none fits is left as it is.

The draws for a whole global batch come from one NumPy generator (a few numbers per image, on
the host), and the boxes are applied to the device batch in one masked fill. Which generator is
the caller's choice (dtrain.data.batch_mix keys it by (seed, step, micro-batch)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

ATTEMPTS = 10  # torchvision's RandomErasing.get_params tries 10 boxes


@dataclass(frozen=True)
class ErasingBoxes:
    """One box per image: rows [top, top + height), columns [left, left + width); `erase` False: untouched."""

    erase: np.ndarray  # bool [N]
    top: np.ndarray  # int64 [N]
    left: np.ndarray
    height: np.ndarray
    width: np.ndarray

    def rows(self, start: int, stop: int) -> ErasingBoxes:
        """The boxes of images start..stop-1 (one rank's share of a global batch)."""
        return ErasingBoxes(*(a[start:stop] for a in (self.erase, self.top, self.left, self.height, self.width)))


def draw_boxes(rng: np.random.Generator, count: int, image_height: int, image_width: int, *, prob: float,
               scale: Sequence[float], ratio: Sequence[float]) -> ErasingBoxes:
    """The boxes of `count` images of one size; the same generator state gives the same boxes."""
    chosen = rng.random(count) < prob
    area = image_height * image_width
    target = area * rng.uniform(scale[0], scale[1], (count, ATTEMPTS))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (count, ATTEMPTS)))
    heights = np.rint(np.sqrt(target * aspect)).astype(np.int64)
    widths = np.rint(np.sqrt(target / aspect)).astype(np.int64)
    fits = (heights < image_height) & (widths < image_width) & (heights > 0) & (widths > 0)
    first = fits.argmax(axis=1)  # the first attempt that fits (0 when none does: masked by `erase`)
    rows = np.arange(count)
    height, width = heights[rows, first], widths[rows, first]
    top = np.floor(rng.random(count) * (image_height - height + 1)).astype(np.int64)
    left = np.floor(rng.random(count) * (image_width - width + 1)).astype(np.int64)
    return ErasingBoxes(chosen & fits.any(axis=1), top, left, height, width)


def erase(images: torch.Tensor, boxes: ErasingBoxes) -> torch.Tensor:
    """`images` [B, C, H, W] with each chosen box set to 0 (a new tensor; the input is not changed)."""
    device = images.device
    host = torch.from_numpy(np.stack([boxes.erase.astype(np.int64), boxes.top, boxes.left, boxes.height,
                                      boxes.width]))
    # One copy to the device; on CUDA from pinned memory, so it does not wait for the queued steps.
    table = host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host
    chosen, top, left, height, width = table.view(5, -1, 1, 1).unbind(0)
    rows = torch.arange(images.shape[2], device=device).view(1, -1, 1)
    cols = torch.arange(images.shape[3], device=device).view(1, 1, -1)
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width) & (chosen > 0)
    return images.masked_fill(inside.unsqueeze(1), 0.0)
