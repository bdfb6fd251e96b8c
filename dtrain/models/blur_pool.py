"""BlurPool (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"): a fixed 3x3
binomial low-pass filter in front of each stride-2 convolution, so the subsampling aliases less.

As FFCV's ResNet-50 recipes apply it (examples/imagenet-example/train_imagenet.py, `use_blurpool`,
`BlurPoolConv2d`): filter [1, 2, 1] x [1, 2, 1] / 16, depthwise, stride 1, zero padding 1, in
front of every stride-2 convolution of the residual units, the projection shortcuts included.
Here the filter is a step of its own rather than a wrapper around the convolution, so the
convolutions keep their state_dict keys (a checkpoint loads with or without BlurPool) and the
complexity counter sees the blur as the depthwise convolution it is. The filter is a
non-persistent buffer: no parameters, nothing in the state_dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def binomial_kernel() -> torch.Tensor:
    """The normalised 3x3 binomial filter: outer([1, 2, 1], [1, 2, 1]) / 16 (sums to 1)."""
    row = torch.tensor([1.0, 2.0, 1.0])
    return torch.outer(row, row) / 16.0


class BlurPool(nn.Module):
    """Depthwise 3x3 binomial blur, stride 1, same size out as in."""

    kernel: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("kernel", binomial_kernel().expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel.to(x.dtype), stride=1, padding=1, groups=self.channels)

    def extra_repr(self) -> str:
        return f"{self.channels}, binomial 3x3"
