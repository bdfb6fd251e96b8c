"""distributed.engine=ddp: torch's DistributedDataParallel (nothing to wrap on one process), torch
AMP (autocast + GradScaler for fp16) and the optimiser the engine steps (clipping the gradients first)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dtrain.checkpoint import Stateful
from dtrain.config import RunConfig
from dtrain.distributed.context import DistContext
from dtrain.distributed.wrap import unwrap, wrap
from dtrain.engine.engine import ModelPart, OptionalPart
from dtrain.engine.optimizer import build_optimizer, clip_gradients, set_lr
from dtrain.engine.precision import Autocast, maybe_compile, prepare_model, setup_precision


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
        self.clip_grad_norm = cfg.optim.clip_grad_norm

    def forward(self, images: torch.Tensor, *, boundary: bool) -> torch.Tensor:
        images = images.to(self.ctx.device, non_blocking=True)
        if self.precision.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        # DDP all-reduces gradients in the backward of a forward run outside no_sync(): only the
        # boundary micro-batch of a step does; the others only accumulate this rank's gradients.
        wrapped = self.wrapped
        sync = wrapped.no_sync() if not boundary and isinstance(wrapped, DistributedDataParallel) \
            else contextlib.nullcontext()
        with sync, self.precision.context():
            logits: torch.Tensor = self.forward_model(images)
        return logits

    def backward(self, loss: torch.Tensor, *, boundary: bool) -> None:
        loss = loss / self.accum  # gradients of the step's mean loss
        if self.precision.scaler is not None:
            loss = self.precision.scaler.scale(loss)
        torch.autograd.backward(loss)  # what loss.backward() calls (Tensor.backward has no type hints)

    def step(self) -> None:
        if self.clip_grad_norm > 0:
            if self.precision.scaler is not None:  # clip the true gradients, not the loss-scaled ones
                self.precision.scaler.unscale_(self.optimizer)
            clip_gradients(self.optimizer, self.clip_grad_norm)
        if self.precision.scaler is not None:
            self.precision.scaler.step(self.optimizer)
            self.precision.scaler.update()
        else:
            self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def set_lr(self, lr: float) -> None:
        set_lr(self.optimizer, lr)

    def eval_context(self) -> Autocast | None:
        return self.precision.autocast

    @property
    def channels_last(self) -> bool:
        return self.precision.channels_last

    def parts(self) -> dict[str, Stateful[Any]]:
        return {"model": ModelPart(self.model, self.model_name), "optimizer": self.optimizer,
                "scaler": OptionalPart(self.precision.scaler)}

    # DDP's state is whole on every rank: dtrain's checkpoint holds all of it.
    def save_shards(self, directory: Path, tag: str) -> dict[str, Any] | None:
        return None

    def load_shards(self, directory: Path, tag: str, source: Path) -> None:
        return None

    def prune_shards(self, directory: Path, kept_tags: set[str]) -> None:
        return None
