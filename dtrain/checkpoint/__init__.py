"""Checkpoints: atomic save/load, retention, auto-resume, RNG state of every rank, preemption.

    from dtrain.checkpoint import CheckpointManager, PreemptionHandler, SavePolicy
    manager.register({"model": model, "optimizer": optimizer, ...}); manager.save_parts(step)
    (each part is `Stateful`: state_dict() / load_state_dict(state))
    from dtrain.checkpoint import capture_rng_state, restore_rng_state, gather_rng_states
"""

from dtrain.checkpoint.atomic import CorruptCheckpoint, atomic_load, atomic_save, read_checkpoint
from dtrain.checkpoint.format import FORMAT_VERSION, NonFiniteStateError
from dtrain.checkpoint.manager import CheckpointManager, Stateful, checkpoint_name
from dtrain.checkpoint.policy import SavePolicy
from dtrain.checkpoint.rng import (
    capture_rng_state,
    gather_rng_states,
    restore_rank_rng_state,
    restore_rng_state,
)
from dtrain.checkpoint.signals import PREEMPTED_EXIT_CODE, PreemptionHandler

__all__ = [
    "CheckpointManager",
    "CorruptCheckpoint",
    "FORMAT_VERSION",
    "NonFiniteStateError",
    "PREEMPTED_EXIT_CODE",
    "PreemptionHandler",
    "SavePolicy",
    "Stateful",
    "read_checkpoint",
    "atomic_load",
    "atomic_save",
    "capture_rng_state",
    "checkpoint_name",
    "gather_rng_states",
    "restore_rank_rng_state",
    "restore_rng_state",
]
