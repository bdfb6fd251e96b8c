"""The Engine interface: what the training loop asks of a distribution engine, and the registry.

The loop knows only this interface; DDP (dtrain/engine/ddp.py) and DeepSpeed
(dtrain/engine/deepspeed_engine.py) are peers behind it. An engine owns the wrapped model, the
optimiser and mixed precision; it exposes its checkpointable parts as `Stateful` objects (the
checkpoint manager composes them with the loop's own parts and owns saving and restoring them)
and may write shards of its own (DeepSpeed's ZeRO partitions) next to dtrain's checkpoint.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from dtrain.checkpoint import Stateful
from dtrain.checkpoint.format import UnusableCheckpoint
from dtrain.config import RunConfig
from dtrain.distributed.context import DistContext
from dtrain.engine.precision import Autocast
from dtrain.errors import DtrainError


class Engine(Protocol):
    model: nn.Module  # the bare module (no DDP/DeepSpeed wrapper): evaluated and saved
    channels_last: bool  # evaluation feeds the model in the same memory format
    # fp16 loss scaling skips non-finite steps by itself: the loop does not stop on them.
    tolerates_non_finite: bool

    def forward(self, images: torch.Tensor, *, boundary: bool) -> torch.Tensor:
        """Logits of a training micro-batch (moved to the device, in the engine's precision);
        `boundary`: the last micro-batch of the step, whose backward synchronises gradients."""

    def backward(self, loss: torch.Tensor, *, boundary: bool) -> None:
        """Backward of one micro-batch's mean loss; `boundary` as in `forward`."""

    def step(self) -> None:
        """The optimiser step (after the boundary micro-batch)."""

    def zero_grad(self) -> None: ...

    def set_lr(self, lr: float) -> None: ...

    def eval_context(self) -> Autocast | None:
        """The autocast (or None) evaluation of `model` needs."""

    def parts(self) -> dict[str, Stateful[Any]]:
        """Checkpoint parts by name ("model", "optimizer", ...): the checkpoint manager saves and
        restores them (the engine has no state_dict of its own)."""

    def save_shards(self, directory: Path, tag: str) -> dict[str, Any] | None:
        """Write the engine's own shards (a collective); returns what dtrain's checkpoint records."""

    def load_shards(self, directory: Path, tag: str, source: Path) -> None: ...

    def prune_shards(self, directory: Path, kept_tags: set[str]) -> None: ...


# distributed.engine -> "module:class", imported only when used (DeepSpeed is optional).
ENGINES: dict[str, str] = {
    "ddp": "dtrain.engine.ddp:DDPEngine",
    "deepspeed": "dtrain.engine.deepspeed_engine:DeepSpeedEngine",
}


# An engine class: built from the run's config, this process's context and the bare model.
EngineFactory = Callable[[RunConfig, DistContext, nn.Module], Engine]


def engine_class(name: str) -> EngineFactory:
    target = ENGINES.get(name)
    if target is None:
        raise DtrainError(f"distributed.engine={name!r} is not one of {', '.join(ENGINES)}")
    module_name, attribute = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise DtrainError(f"distributed.engine={name} needs the module {exc.name!r}; "
                          f"install it (pip install 'dtrain[{name}]') or use distributed.engine=ddp") from None
    factory: EngineFactory = getattr(module, attribute)
    return factory


class ModelPart:
    """The bare model as a checkpoint part; a model that does not fit is one clear line."""

    def __init__(self, model: nn.Module, model_name: str) -> None:
        self.model, self.model_name = model, model_name

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise UnusableCheckpoint(f"the checkpoint does not fit {self.model_name} ({first})") from None


class OptionalPart:
    """A part that may be absent (the fp16 GradScaler): saved as None, restored when present.

    A checkpoint written without it (None) restores nothing into a run that has it (fp32 -> fp16)."""

    def __init__(self, part: Stateful[dict[str, Any]] | None) -> None:
        self.part = part

    def state_dict(self) -> dict[str, Any] | None:
        return self.part.state_dict() if self.part is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.part is not None and state:
            self.part.load_state_dict(state)
