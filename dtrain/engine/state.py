"""The loop's own checkpoint parts, and how a run finds the checkpoint it resumes from.

A checkpoint composes the engine's parts (model, optimiser, AMP scaler or shard record) with
these: the LR schedule (plateau state), the train state (step, epoch, loader batches consumed
in the epoch, evaluations so far), the RNG of every rank and the tracker run id (a resumed run
continues the same MLflow run), plus the resolved config (`dtrain eval CHECKPOINT` rebuilds the
model from it). See dtrain/checkpoint/format.py for the on-disk layout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtrain.checkpoint import CheckpointManager, gather_rng_states, restore_rank_rng_state
from dtrain.checkpoint.fingerprint import has_checkpoints, new_directory_key
from dtrain.checkpoint.format import UnusableCheckpoint, upgrade
from dtrain.config import RunConfig
from dtrain.distributed.failure import SymmetricError
from dtrain.errors import DtrainError


@dataclass
class Position:
    """Where the run is: optimiser steps taken, the epoch in progress, its loader batches consumed."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    best_top1_err: float | None = None
    best_top1_err_ema: float | None = None  # of the weight EMA (ema.enabled)
    last_checkpoint: Path | None = None
    resumed_from: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)  # evaluations so far

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batches_done": self.batches_done,
                "best_top1_err": self.best_top1_err, "best_top1_err_ema": self.best_top1_err_ema,
                "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batches_done = int(state.get("batches_done", 0))
        self.best_top1_err = state.get("best_top1_err")
        self.best_top1_err_ema = state.get("best_top1_err_ema")
        self.history = list(state.get("history", []))


class RngPart:
    """Every rank's generators (gathering them is a collective); each rank restores its own."""

    def __init__(self, *, rank: int, world_size: int, seed: int, position: Position) -> None:
        self.rank, self.world_size, self.seed, self.position = rank, world_size, seed, position

    def state_dict(self) -> list[dict[str, Any]]:
        return gather_rng_states()

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        restore_rank_rng_state(state, rank=self.rank, world_size=self.world_size, seed=self.seed,
                               step=self.position.step)


@dataclass
class TrackerPart:
    run_id: str | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")


def run_checkpoints(cfg: RunConfig, rank: int) -> CheckpointManager:
    """The run's CheckpointManager: checkpoint.dir (default RUN_DIR/checkpoints) with its retention."""
    return CheckpointManager(cfg.resolved_checkpoint_dir(), keep_last=cfg.checkpoint.keep_last,
                             keep_best=cfg.checkpoint.keep_best, rank=rank)


# checkpoint.resume takes these words or a checkpoint path: auto, the newest checkpoint that loads;
# never, a fresh run; force, auto despite changed settings (dtrain/checkpoint/fingerprint.py).
RESUME_MODES = ("auto", "never", "force")


def fresh_start_hint(cfg: RunConfig) -> str:
    """How to start afresh instead, naming only what is accepted here: checkpoint.resume=never
    refuses a checkpoint directory that holds checkpoints (find_resume_checkpoint), so there the
    way is a new directory."""
    directory = cfg.resolved_checkpoint_dir()
    if not has_checkpoints(directory):
        return "to start afresh instead, use checkpoint.resume=never"
    path_given = cfg.checkpoint.resume not in RESUME_MODES  # it would load that path again
    return (f"to start afresh instead, give the run a new {new_directory_key(cfg)}=..."
            f"{' with checkpoint.resume=never' if path_given else ''} ({directory} holds checkpoints)")


@contextmanager
def explain_fresh_start(cfg: RunConfig) -> Iterator[None]:
    """An UnusableCheckpoint raised inside gets fresh_start_hint(cfg) appended (same class, so
    every rank still prints or stays quiet as before)."""
    try:
        yield
    except UnusableCheckpoint as exc:
        exc.args = (f"{exc}; {fresh_start_hint(cfg)}",)
        raise


def find_resume_checkpoint(cfg: RunConfig, checkpoints: CheckpointManager) -> tuple[dict[str, Any], Path] | None:
    """The checkpoint checkpoint.resume names (auto: the newest that loads), or None to start afresh."""
    mode = cfg.checkpoint.resume
    if mode == "never":
        # A fresh run among an earlier run's checkpoints would have its own deleted by
        # retention (the old ones sort newer); never lose either run's files.
        earlier = checkpoints.checkpoints()
        if earlier:
            raise SymmetricError(  # every rank sees the same directory
                f"checkpoint.resume=never, but {checkpoints.directory} holds an earlier run's "
                f"checkpoints (newest {earlier[-1][1].name}); give this run a new {new_directory_key(cfg)}=..., "
                "or continue that run with checkpoint.resume=auto")
        return None
    if mode in ("auto", "force"):  # force: auto despite changed settings (checkpoint.fingerprint)
        return checkpoints.load_latest()
    path = Path(mode)
    if not path.is_file():
        raise DtrainError(f"checkpoint.resume={mode}: no such file; name an existing checkpoint, or use "
                          "checkpoint.resume=auto (this run's own checkpoints, else a fresh start)")
    return checkpoints.load(path), path


def check_model_name(state: dict[str, Any], cfg: RunConfig, path: Path) -> dict[str, Any]:
    state = upgrade(state, path)
    saved_model = (state.get("config") or {}).get("model", {}).get("name")
    if saved_model and saved_model != cfg.model.name:
        raise UnusableCheckpoint(f"checkpoint {path} was written for model {saved_model}, this run builds "
                                 f"{cfg.model.name}")
    return state
