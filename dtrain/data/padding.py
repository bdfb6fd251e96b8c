"""CIFAR's pad-and-crop with the mean subtracted first: the padding is zero in the network's input.

R1 sec. 4.2: "4 pixels are padded on each side, and a 32x32 crop is randomly sampled from the
padded image or its horizontal flip", with the per-pixel mean subtracted. The implementations of the
papers' era subtract the mean image first and pad the *normalised* image with zeros (Caffe's data
layer subtracts its mean file before anything else; fb.resnet.torch, which R2's code builds on,
runs ColorNormalize before RandomCrop(32, 4)). So the border is 0 and every pixel keeps its own
mean. Padding the raw pixels first gives a border of (0 - mean) / std (about -2) instead, and a
shifted image another pixel's mean. The same holds for data.normalize=channel (fb.resnet.torch's
order), so every normalisation pads with zeros after it.

The loaders still pad and crop uint8 pixels where they did (the torch loader's workers, the gpu
loader's gather); each sample also carries its *window*, where its crop lies in the source image,
and the normalisation on the device subtracts the mean at the source positions and zeroes what lies
outside the image:

    out[b, :, i, j] = ((pixels / 255 + offset) - mean[source row, source column]) / std   inside
                      0                                                                  padding

which is subtract-then-pad-then-crop (then flip), exactly (tests/unit/test_pad_after_mean.py).
Windows are built on the CPU (in the workers, from the draws), so no step waits for the device.
"""

from __future__ import annotations

import torch

# Window columns: source column and row of the crop's first pixel (negative: in the padding),
# the source image's width and height, and the flip applied after the crop.
WIN_X, WIN_Y, WIN_W, WIN_H, WIN_FLIP = range(5)
WINDOW_WIDTH = 5


def pad_crop_window(left: int, top: int, pad: int, width: int, height: int, flip: bool) -> torch.Tensor:
    """The window of a crop at (left, top) of a `width` x `height` image zero-padded by `pad`."""
    return torch.tensor([left - pad, top - pad, width, height, int(flip)], dtype=torch.int64)


def stack_windows(windows) -> torch.Tensor | None:
    """A batch's windows [B, 5], or None when its augmentation pads nothing (every item None)."""
    windows = list(windows)
    if all(w is None for w in windows):
        return None
    return torch.stack(windows)


def source_positions(windows: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """(rows [B, H], cols [B, W], inside [B, 1, H, W] bool) of a batch's height x width crops:
    the source pixel each output pixel shows, clamped into the image, and whether it is one."""
    windows = windows.to("cpu", torch.int64)
    j = torch.arange(width)
    mirrored = windows[:, WIN_FLIP:WIN_FLIP + 1].bool()
    cols = windows[:, WIN_X:WIN_X + 1] + torch.where(mirrored, width - 1 - j, j)
    rows = windows[:, WIN_Y:WIN_Y + 1] + torch.arange(height)
    col_in = (cols >= 0) & (cols < windows[:, WIN_W:WIN_W + 1])
    row_in = (rows >= 0) & (rows < windows[:, WIN_H:WIN_H + 1])
    inside = (row_in[:, :, None] & col_in[:, None, :])[:, None]
    return (rows.clamp(min=0).minimum(windows[:, WIN_H:WIN_H + 1] - 1),
            cols.clamp(min=0).minimum(windows[:, WIN_W:WIN_W + 1] - 1), inside)


def zero_padding(out: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Set the padded positions of a normalised NCHW batch to 0, in place."""
    inside = source_positions(windows, out.shape[2], out.shape[3])[2]
    return out.mul_(inside.to(out.device, non_blocking=True))


def gather_sources(image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[C, Hs, Ws] -> [B, C, H, W]: image[:, rows[b, i], cols[b, j]] for each window b."""
    device = image.device
    rows, cols = rows.to(device, non_blocking=True), cols.to(device, non_blocking=True)
    return image[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)


def crop_windows(images: torch.Tensor, windows: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NHWC source images -> NHWC size x size crops at `windows` (flipped where asked). The
    padded positions hold the nearest image pixel, not 0: zero_padding clears them after the
    normalisation."""
    rows, cols, _ = source_positions(windows, size, size)
    batch = torch.arange(images.shape[0], device=images.device)[:, None, None]
    rows, cols = rows.to(images.device, non_blocking=True), cols.to(images.device, non_blocking=True)
    return images[batch, rows[:, :, None], cols[:, None, :]]


def draw_windows(generator: torch.Generator, count: int, width: int, height: int, pad: int, size: int,
                 flip: bool) -> torch.Tensor:
    """Random pad-and-crop windows for `count` images of one size (the FFCV loader's draws): crop
    origins uniform over the padded image, flips with probability 1/2 when enabled."""
    left = torch.randint(0, width + 2 * pad - size + 1, (count,), generator=generator)
    top = torch.randint(0, height + 2 * pad - size + 1, (count,), generator=generator)
    mirrored = (torch.rand(count, generator=generator) < 0.5) & flip
    sizes = torch.tensor([width, height], dtype=torch.int64).expand(count, 2)
    return torch.stack([left - pad, top - pad, *sizes.T, mirrored.long()], dim=1)

