"""What the loaders subtract and divide by: per-channel mean / std (`Normalize`), or R1's
per-pixel mean image (`PerPixelMeanNormalize`, R1 sec. 3.4 and 4.2). stats.build_normalize picks
one by data.normalize; the gpu loader subtracts the same `ScaledMeanImage` on the device."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .padding import gather_sources, source_positions, zero_padding


class Normalize:
    """uint8 NHWC pixels (+ per-sample RGB offsets in [0, 1] units) -> float32 NCHW
    ((pixels / 255 + offset) - mean) / std, computed as one multiply-add on the pixels' device.
    With the batch's pad-and-crop windows, the padding becomes 0 (dtrain.data.padding)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float64)
        self.std = torch.tensor(std, dtype=torch.float64)

    def __call__(self, pixels: torch.Tensor, offsets: torch.Tensor | None = None,
                 windows: torch.Tensor | None = None) -> torch.Tensor:
        out = self._scaled(pixels, offsets)
        return out if windows is None else zero_padding(out, windows)

    def _scaled(self, pixels: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
        batch, height, width, channels = pixels.shape
        device = pixels.device
        scale = (1.0 / (255.0 * self.std)).float().to(device).view(1, channels, 1, 1)
        shift = torch.zeros(batch, channels, dtype=torch.float64) if offsets is None else offsets.double().cpu()
        bias = ((shift - self.mean) / self.std).float().to(device).view(batch, channels, 1, 1)
        out = torch.empty((batch, channels, height, width), dtype=torch.float32, device=device)
        out.copy_(pixels.permute(0, 3, 1, 2))
        return out.mul_(scale).add_(bias)


class ScaledMeanImage:
    """R1's per-pixel mean image (HxWx3 in [0, 1], from `dtrain prepare`) / std per channel, as
    float32 [1, 3, H, W] for a view of `height` x `width` on `device`: the stored image where the
    sizes match, else bilinearly resized to the view (multi-scale testing). Shared by the torch and
    gpu loaders so both subtract the very same tensor."""

    def __init__(self, mean_image, std: torch.Tensor):
        image = torch.as_tensor(mean_image, dtype=torch.float64).permute(2, 0, 1)  # CHW
        self.scaled_mean = (image / std.view(-1, 1, 1)).float()[None]
        self._cache: dict = {}

    def __call__(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        key = (height, width, str(device))
        if key not in self._cache:
            mean = self.scaled_mean
            if tuple(mean.shape[-2:]) != (height, width):
                mean = torch.nn.functional.interpolate(mean, size=(height, width), mode="bilinear", align_corners=False)
            self._cache[key] = mean.to(device)
        return self._cache[key]

    def subtract(self, out: torch.Tensor, windows: torch.Tensor | None) -> torch.Tensor:
        """out - the mean, in place: at the view's own positions, or (pad-and-crop windows) at the
        source pixels each output pixel shows, with the padding then 0 (dtrain.data.padding)."""
        height, width = out.shape[2], out.shape[3]
        if windows is None:
            return out.sub_(self(height, width, out.device))
        rows, cols, _ = source_positions(windows, height, width)
        sizes = windows[:, 2:4].tolist()  # source (width, height) per sample, on the CPU
        for size in sorted(set(map(tuple, sizes))):  # one size for CIFAR: one gather
            chosen = torch.tensor([i for i, s in enumerate(sizes) if tuple(s) == size])
            mean = self(size[1], size[0], out.device)[0]
            out[chosen.to(out.device)] -= gather_sources(mean, rows[chosen], cols[chosen])
        return zero_padding(out, windows)


class PerPixelMeanNormalize(Normalize):
    """R1: subtract the dataset's per-pixel mean image (HxWx3 in [0, 1], from `dtrain prepare`), then
    / std per channel (a uniform rescale that the BN after conv1 absorbs). Without padding the mean
    is subtracted at the view's pixel positions; views of another size (multi-scale testing) get
    the mean image resized to theirs. A pad-and-crop view gets each pixel's own mean and a zero
    border, as if the mean had been subtracted before the padding (dtrain.data.padding)."""

    def __init__(self, mean_image, std: Sequence[float]):
        super().__init__([0.0, 0.0, 0.0], std)
        self.mean_image = ScaledMeanImage(mean_image, self.std)

    def __call__(self, pixels: torch.Tensor, offsets: torch.Tensor | None = None,
                 windows: torch.Tensor | None = None) -> torch.Tensor:
        return self.mean_image.subtract(self._scaled(pixels, offsets), windows)
