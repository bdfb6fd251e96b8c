"""distributed.engine=ddp: torch's DistributedDataParallel (nothing to wrap on one process), torch
AMP (autocast + GradScaler for fp16) and an SGD optimiser the engine steps."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dtrain.config import RunConfig
from dtrain.distributed.context import DistContext
from dtrain.distributed.wrap import unwrap, wrap
from dtrain.engine.engine import ModelPart, OptionalPart, Stateful
from dtrain.engine.optimizer import build_optimizer, set_lr
from dtrain.engine.precision import maybe_compile, prepare_model, setup_precision


class DDPEngine:
    tolerates_non_finite = False

    def __init__(self, cfg: RunConfig, ctx: DistContext, model: nn.Module) -> None:
        self.ctx, self.model_name = ctx, cfg.model.name
        self.precision = setup_precision(cfg.train, ctx.device)
        self.wrapped = wrap(prepare_model(model, cfg.train, ctx.device), cfg.distributed, ctx)
        self.model = unwrap(self.wrapped)  # after sync BN conversion: what is saved and evaluated
        self.forward_model = maybe_compile(self.wrapped, cfg.train)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.accum = cfg.optim.grad_accum
        self._micro = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.ctx.device, non_blocking=True)
        if self.precision.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        # DDP all-reduces gradients in the backward of a forward run outside no_sync(): only the
        # last micro-batch of a step does (the grad_accum micro-batches are counted here).
        self._micro += 1
        boundary = self._micro >= self.accum or not hasattr(self.wrapped, "no_sync")
        with (contextlib.nullcontext() if boundary else self.wrapped.no_sync()), self.precision.context():
            return self.forward_model(images)

    def backward(self, loss: torch.Tensor, *, boundary: bool) -> None:
        loss = loss / self.accum  # gradients of the step's mean loss
        if self.precision.scaler is not None:
            self.precision.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self) -> None:
        self._micro = 0
        if self.precision.scaler is not None:
            self.precision.scaler.step(self.optimizer)
            self.precision.scaler.update()
        else:
            self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def set_lr(self, lr: float) -> None:
        set_lr(self.optimizer, lr)

    def eval_context(self):
        return self.precision.autocast

    @property
    def channels_last(self) -> bool:
        return self.precision.channels_last

    def parts(self) -> dict[str, Stateful]:
        return {"model": ModelPart(self.model, self.model_name), "optimizer": self.optimizer,
                "scaler": OptionalPart(self.precision.scaler)}

    def state_dict(self) -> dict[str, Any]:
        return {name: part.state_dict() for name, part in self.parts().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in self.parts().items():
            part.load_state_dict(state.get(name))

    # DDP's state is whole on every rank: dtrain's checkpoint holds all of it.
    def save_shards(self, directory: Path, tag: str) -> dict[str, Any] | None:
        return None

    def load_shards(self, directory: Path, tag: str, source: Path) -> None:
        return None

    def prune_shards(self, directory: Path, kept_tags: set[str]) -> None:
        return None
