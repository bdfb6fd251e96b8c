"""The on-disk checkpoint format: a dict of named parts plus "format_version" and "config".

Version 3 (this one) holds each registered part under its name: "model", "optimizer", "scaler",
"lr_schedule", "train_state" (step, epoch, batches consumed, evaluations so far), "rng" (every
rank's generators), "tracker" (the run id), and an engine's shard record (e.g. "deepspeed").
Everything in it is a tensor or a plain value (dict, list, tuple, str, number, bool, None), so it
is read with torch.load(weights_only=True): opening a checkpoint never runs code from it
(dtrain/checkpoint/atomic.py).
Version 2 kept Python's RNG state as a tuple of 625 ints (readable, but slow to unpickle
safely); version 1 (dtrain before the Engine interface) kept the train state and the tracker run
id as top-level keys. Both are upgraded on load. Any other version is refused in one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dtrain.checkpoint.rng import python_state_as_tensor
from dtrain.errors import DtrainError

FORMAT_VERSION = 3
TRAIN_STATE_KEYS = ("step", "epoch", "batches_done", "best_top1_err", "history")


class UnusableCheckpoint(DtrainError):
    """No checkpoint this run can continue from: every one damaged, or one written for another
    model, format or engine. The message says what is wrong; the resume code (dtrain/engine/state.py)
    adds how to start afresh, which depends on the run's settings."""


class NonFiniteStateError(DtrainError):
    """A checkpoint would hold NaN/Inf weights or optimiser state: it is never written."""

    raised_on_every_rank = True  # every rank checks (and agrees on) the same verdict
    exit_code = 1  # a training failure, not a user error


def upgrade(state: Any, path: Path | str) -> dict[str, Any]:
    """`state` in the current format, whatever version wrote it (one-line error otherwise)."""
    if not isinstance(state, dict):
        raise UnusableCheckpoint(f"{path} is not a dtrain checkpoint (it holds a {type(state).__name__}, not a dict)")
    version = state.get("format_version", 1)
    if version not in UPGRADES and version != FORMAT_VERSION:
        raise UnusableCheckpoint(f"{path} has checkpoint format version {version}; this dtrain reads versions 1 to "
                                 f"{FORMAT_VERSION}: upgrade dtrain to read it")
    current: dict[str, Any] = state
    while version != FORMAT_VERSION:
        current = UPGRADES[version](current)
        version = current["format_version"]
    return current


def _from_version_1(state: dict[str, Any]) -> dict[str, Any]:
    upgraded = {k: v for k, v in state.items() if k not in (*TRAIN_STATE_KEYS, "tracker_run_id")}
    upgraded["train_state"] = {k: state[k] for k in TRAIN_STATE_KEYS if k in state}
    upgraded["tracker"] = {"run_id": state.get("tracker_run_id")}
    upgraded["format_version"] = 2
    return upgraded


def _from_version_2(state: dict[str, Any]) -> dict[str, Any]:
    rng = state.get("rng")
    if isinstance(rng, list):  # each rank's entry; Python's state was a (version, words, gauss) tuple
        rng = [{**entry, "python": python_state_as_tensor(entry["python"])}
               if isinstance(entry.get("python"), (tuple, list)) else entry for entry in rng]
    return {**state, "rng": rng, "format_version": 3}


# version -> the step to the next version
UPGRADES = {1: _from_version_1, 2: _from_version_2}


def floating_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every floating-point tensor inside nested dicts/lists/tuples."""
    if torch.is_tensor(obj):
        if obj.is_floating_point():
            yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from floating_tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from floating_tensors(value)


def all_finite(obj: Any) -> bool:
    """True when no floating tensor in `obj` holds NaN/Inf. One aminmax pass per tensor (NaN
    propagates to both, an Inf shows as the min or max: no element-wise mask is allocated) and
    one host sync per device."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for tensor in floating_tensors(obj):
        if tensor.numel():
            by_device.setdefault(tensor.device, []).append(torch.stack(torch.aminmax(tensor.detach())))
    return all(bool(torch.stack(group).isfinite().all()) for group in by_device.values())


def to_cpu_copy(obj: Any) -> Any:
    """A copy of `obj` whose tensors are on the CPU (pinned when copied from a GPU), so training
    may change the originals while a background thread writes the copy."""
    if torch.is_tensor(obj):
        if obj.device.type == "cpu":
            return obj.detach().clone()
        out = torch.empty(obj.shape, dtype=obj.dtype, pin_memory=True)
        return out.copy_(obj.detach(), non_blocking=True)
    if isinstance(obj, dict):
        return {key: to_cpu_copy(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [to_cpu_copy(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu_copy(value) for value in obj)
    return obj
