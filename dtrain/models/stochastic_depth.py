"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth"): each residual
unit's branch F is dropped at random while training, so the unit passes only its shortcut.

The drop rate grows linearly with depth (Huang et al. sec. 3, "linear decay rule"), counted as
timm's and torchvision's ResNets count it: unit i of N (from 0) drops with rate
`final_rate * i / (N - 1)`, so the first unit is never dropped and the last one at `final_rate`.

`stochastic_depth` has the semantics of torchvision.ops.stochastic_depth, written here by hand
(dtrain does not depend on torchvision, which has no build beside the CPU torch): "row" drops F
per sample (timm's drop_path), "batch" for the whole mini-batch (Huang et al.'s original);
kept values are scaled by 1 / (1 - p), so evaluation (identity) needs no rescaling. The mask is
drawn from torch's global generator of the tensor's device, which dtrain's checkpoints save and
restore, so a resumed run draws the same masks as one that never stopped.
"""

from __future__ import annotations

import torch

STOCHASTIC_DEPTH_MODES = ("row", "batch")


def linear_drop_rates(final_rate: float, units: int) -> list[float]:
    """The drop rate of each of `units` residual units: 0 for the first, `final_rate` for the last."""
    if units <= 1:
        return [final_rate] * units
    return [final_rate * index / (units - 1) for index in range(units)]


def stochastic_depth(x: torch.Tensor, p: float, mode: str, training: bool) -> torch.Tensor:
    """x with each row ("row") or the whole batch ("batch") zeroed with probability p and the rest
    scaled by 1 / (1 - p); x itself in evaluation or when p is 0."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"stochastic depth rate must be in [0, 1], got {p}")
    if mode not in STOCHASTIC_DEPTH_MODES:
        raise ValueError(f"stochastic depth mode must be one of {', '.join(STOCHASTIC_DEPTH_MODES)}, got {mode!r}")
    if not training or p == 0.0:
        return x
    survival = 1.0 - p
    shape = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
    noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(survival)
    if survival > 0.0:
        noise.div_(survival)
    return x * noise
