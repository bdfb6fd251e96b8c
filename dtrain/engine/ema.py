"""Weight EMA: an exponential moving average of the weights and BN statistics, kept beside them.

After every `ema.every_steps`-th optimiser step, on every rank (each holds the full weights and
evaluates its share of the validation split with the average):

    ema = decay * ema + (1 - decay) * weights

over the parameters and the buffers (BN running statistics), as torchvision's reference
recipe does (references/classification/utils.py ExponentialMovingAverage: AveragedModel with
use_buffers=True). torch's AveragedModel does the work with get_ema_multi_avg_fn. The average
starts as a copy of the weights and that copy counts as the first average (timm's ModelEmaV2
convention), so after k updates with the weights held at w the average is
decay^k * w0 + (1 - decay^k) * w. During the first `ema.warmup_epochs` epochs each update copies
the weights instead (torchvision restarts its EMA during the lr warm-up).

The average is a checkpoint part ("ema": its weights in the bare model's state_dict keys, and the
update count), so a resumed run continues it bitwise, and `dtrain eval --weights ema` evaluates it.
Both engines hand the bare module over (DDP: the unwrapped model; DeepSpeed: its module, whose
parameters ZeRO stages 0-2 leave whole; stage 3 is refused by the DeepSpeed engine). A module
kept in half precision (DeepSpeed fp16/bf16) is averaged into float32: a half-precision average
of decay 0.9998 would not move, the update being below half an ulp of the weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn, get_ema_multi_avg_fn

from dtrain.checkpoint.format import UnusableCheckpoint
from dtrain.config import EmaConfig

EMA_PART = "ema"  # the checkpoint part's name


class WeightEma:
    """The running average of `source` (the engine's bare model); a Stateful checkpoint part."""

    def __init__(self, source: nn.Module, cfg: EmaConfig) -> None:
        self.source, self.cfg = source, cfg
        # torch's get_ema_*_fn have no type hints.
        half = any(t.is_floating_point() and t.dtype != torch.float32 for t in source.parameters())
        if half:  # per-tensor average, promoting the half-precision weights to the float32 copy
            self.averaged = AveragedModel(source, avg_fn=get_ema_avg_fn(cfg.decay),  # type: ignore[no-untyped-call]
                                          use_buffers=True)
            self.averaged.module.float()
        else:  # foreach kernels over every tensor at once
            self.averaged = AveragedModel(source, multi_avg_fn=get_ema_multi_avg_fn(cfg.decay),  # type: ignore[no-untyped-call]
                                          use_buffers=True)
        self.averaged.requires_grad_(False)
        self.averaged.n_averaged.fill_(1)  # the copy made above is the first average

    @property
    def model(self) -> nn.Module:
        """The averaged network (same class and state_dict keys as the source): what is evaluated."""
        module: nn.Module = self.averaged.module
        return module

    def due(self, step: int) -> bool:
        """Whether the average takes the weights after optimiser step `step` (counted from 1)."""
        return step % self.cfg.every_steps == 0

    @torch.no_grad()
    def update(self, epoch: int) -> None:
        """Fold the source's current weights in; `epoch`: the epoch the step belonged to."""
        if epoch < self.cfg.warmup_epochs:
            self.averaged.n_averaged.zero_()  # AveragedModel copies when it has averaged nothing yet
        self.averaged.update_parameters(self.source)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.model.state_dict(), "updates": int(self.averaged.n_averaged.item())}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """A checkpoint written without EMA (None: ema.enabled was turned on for the resume) starts the
        average from the restored weights, restored before this part."""
        if state is None:
            self.model.load_state_dict(self.source.state_dict())
            self.averaged.n_averaged.fill_(1)
            return
        try:
            self.model.load_state_dict(state["weights"])
        except RuntimeError as exc:
            raise UnusableCheckpoint(f"the checkpoint's EMA weights do not fit the model "
                                     f"({str(exc).splitlines()[0]})") from None
        self.averaged.n_averaged.fill_(int(state["updates"]))
