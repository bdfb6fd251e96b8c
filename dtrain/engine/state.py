"""What a checkpoint holds, and how a run is put back from one (exact resume).

The full state: model, optimiser (momentum buffers), LR schedule (plateau state), AMP scaler,
step/epoch, the position inside the epoch (loader batches already consumed), the RNG of every
rank, the tracker run id (a resumed run continues the same MLflow run) and the resolved config
(`dtrain eval CHECKPOINT` rebuilds the model from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.optim import Optimizer

from dtrain.checkpoint import gather_rng_states, restore_rank_rng_state
from dtrain.config import RunConfig, to_dict
from dtrain.engine.lr_schedule import LRSchedule
from dtrain.errors import DtrainError

FORMAT_VERSION = 1


@dataclass
class Position:
    """Where the run is: optimiser steps taken, the epoch in progress, its loader batches consumed."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    best_top1_err: float | None = None
    last_checkpoint: Path | None = None
    resumed_from: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)  # evaluations so far


def build_state(*, cfg: RunConfig, model: nn.Module, optimizer: Optimizer, schedule: LRSchedule,
                scaler, position: Position, tracker_run_id: str | None) -> dict[str, Any]:
    """The checkpoint dict. Gathers every rank's RNG state: a collective, call it on all ranks."""
    return {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_schedule": schedule.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": position.step,
        "epoch": position.epoch,
        "batches_done": position.batches_done,
        "best_top1_err": position.best_top1_err,
        "history": list(position.history),
        "rng": gather_rng_states(),
        "tracker_run_id": tracker_run_id,
        "config": to_dict(cfg),
    }


def restore_state(state: dict[str, Any], *, cfg: RunConfig, model: nn.Module, optimizer: Optimizer,
                  schedule: LRSchedule, scaler, rank: int, world_size: int, path: Path) -> Position:
    """Load `state` into the run's parts and return its position; RNG last, just before training."""
    saved_model = state.get("config", {}).get("model", {}).get("name")
    if saved_model and saved_model != cfg.model.name:
        raise DtrainError(
            f"checkpoint {path} was written for model {saved_model}, this run builds {cfg.model.name}: "
            "use another run_dir (or checkpoint.resume=never)"
        )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise DtrainError(f"checkpoint {path} does not fit this model ({first}); "
                          "use another run_dir or checkpoint.resume=never") from None
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state.get("lr_schedule") or {})
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    position = Position(step=int(state["step"]), epoch=int(state["epoch"]),
                        batches_done=int(state.get("batches_done", 0)),
                        best_top1_err=state.get("best_top1_err"), last_checkpoint=path,
                        resumed_from=path, history=list(state.get("history", [])))
    restore_rank_rng_state(state["rng"], rank=rank, world_size=world_size, seed=cfg.train.seed,
                           step=position.step)
    return position
