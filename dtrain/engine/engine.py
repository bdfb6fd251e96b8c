"""The Engine interface: what the training loop asks of a distribution engine, and the registry.

The loop knows only this interface; DDP (dtrain/engine/ddp.py) and DeepSpeed
(dtrain/engine/deepspeed_engine.py) are peers behind it. An engine owns the wrapped model, the
optimiser and mixed precision; it exposes its checkpointable parts as `Stateful` objects (the
checkpoint manager composes them with the loop's own parts) and may write shards of its own
(DeepSpeed's ZeRO partitions) next to dtrain's checkpoint.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from dtrain.checkpoint.format import UnusableCheckpoint
from dtrain.errors import DtrainError


@runtime_checkable
class Stateful(Protocol):
    """torch.distributed.checkpoint's protocol: a part of the checkpoint."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Engine(Protocol):
    model: nn.Module  # the bare module (no DDP/DeepSpeed wrapper): evaluated and saved
    channels_last: bool  # evaluation feeds the model in the same memory format
    # fp16 loss scaling skips non-finite steps by itself: the loop does not stop on them.
    tolerates_non_finite: bool

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a training micro-batch (moved to the device, in the engine's precision)."""

    def backward(self, loss: torch.Tensor, *, boundary: bool) -> None:
        """Backward of one micro-batch's mean loss; `boundary`: the last micro-batch of the step."""

    def step(self) -> None:
        """The optimiser step (after the boundary micro-batch)."""

    def zero_grad(self) -> None: ...

    def set_lr(self, lr: float) -> None: ...

    def eval_context(self) -> Any:
        """The autocast (or None) evaluation of `model` needs."""

    def parts(self) -> dict[str, Stateful]:
        """Checkpoint parts by name ("model", "optimizer", ...)."""

    def state_dict(self) -> dict[str, Any]:
        """{name: part.state_dict()} of `parts()`."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def save_shards(self, directory: Path, tag: str) -> dict[str, Any] | None:
        """Write the engine's own shards (a collective); returns what dtrain's checkpoint records."""

    def load_shards(self, directory: Path, tag: str, source: Path) -> None: ...

    def prune_shards(self, directory: Path, kept_tags: set[str]) -> None: ...


# distributed.engine -> "module:class", imported only when used (DeepSpeed is optional).
ENGINES: dict[str, str] = {
    "ddp": "dtrain.engine.ddp:DDPEngine",
    "deepspeed": "dtrain.engine.deepspeed_engine:DeepSpeedEngine",
}


def engine_class(name: str) -> type:
    target = ENGINES.get(name)
    if target is None:
        raise DtrainError(f"distributed.engine={name!r} is not one of {', '.join(ENGINES)}")
    module_name, attribute = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise DtrainError(f"distributed.engine={name} needs the module {exc.name!r}; "
                          f"install it (pip install 'dtrain[{name}]') or use distributed.engine=ddp") from None
    return getattr(module, attribute)


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
    """A part that may be absent (the fp16 GradScaler): saved as None, restored when present."""

    def __init__(self, part: Stateful | None) -> None:
        self.part = part

    def state_dict(self) -> dict[str, Any] | None:
        return self.part.state_dict() if self.part is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.part is not None and state:
            self.part.load_state_dict(state)
