"""Random-number-generator state of a process (and of every rank) for exact resume.

A resumed run draws the same random numbers as the uninterrupted one only if every generator it
uses continues from where it stopped: Python's `random`, NumPy's global generator, torch's CPU
generator and each CUDA device's generator. Each rank has its own streams, so rank 0 stores the
list of all ranks' states and each rank restores its own entry.

Every state is tensors and plain numbers, so a checkpoint loads with torch.load(weights_only=True)
(no pickled Python objects): Python's Mersenne Twister words are an int64 tensor, like NumPy's.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger("dtrain.checkpoint")


def capture_rng_state() -> dict[str, Any]:
    """This process's generator states, as tensors and plain numbers (see the module's docstring)."""
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)  # legacy=True: (kind, keys, pos, has_gauss, cached_gauss)
    kind, keys, pos, has_gauss, cached_gauss = numpy_state
    state: dict[str, Any] = {
        "python": python_state_as_tensor(random.getstate()),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gauss": float(cached_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    # Only touch CUDA when it is already initialised: asking would otherwise create contexts.
    # torch.cuda.is_initialized has no type hints.
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put every generator back to `state` (from capture_rng_state, possibly via a checkpoint)."""
    random.setstate(_as_python_state(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            np.asarray(numpy_state["keys"], dtype=np.int64).astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gauss"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda")
    if cuda_states is not None and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
        else:
            log.warning(
                "checkpoint holds CUDA RNG states for %d devices, this process sees %d: CUDA RNG not restored",
                len(cuda_states),
                torch.cuda.device_count(),
            )


def python_state_as_tensor(state: tuple[Any, ...]) -> dict[str, Any]:
    """random.getstate()'s (version, 625 words, cached gauss) with the words as an int64 tensor."""
    version, internal, gauss = state
    return {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": None if gauss is None else float(gauss)}


def _as_python_state(value: dict[str, Any]) -> tuple[Any, ...]:
    """The tuple random.setstate takes, from python_state_as_tensor's form."""
    return (value["version"], tuple(int(word) for word in value["internal"].tolist()), value["gauss"])


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's state, indexed by rank (a collective: call it on all ranks at the same step).

    Outside a process group this is a list of one entry. Rank 0 puts the list in the checkpoint.
    """
    local = capture_rng_state()
    if not (dist.is_available() and dist.is_initialized()):
        return [local]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return gathered


def derived_seed(seed: int, rank: int, step: int) -> int:
    """A seed that is a pure function of (seed, rank, step), for the world-size-changed case."""
    mixed = np.random.SeedSequence([seed & 0xFFFFFFFF, rank, step]).generate_state(1, dtype=np.uint32)
    return int(mixed[0])


def reseed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def restore_rank_rng_state(states: list[dict[str, Any]], *, rank: int, world_size: int, seed: int, step: int) -> bool:
    """Restore this rank's entry of `states`; returns False when it had to reseed instead.

    A checkpoint from a different world size has no entry that belongs to this rank, so the
    resumed run cannot be bitwise identical to any uninterrupted run; it warns and reseeds every
    generator from (seed, rank, step), which is still deterministic.
    """
    if len(states) == world_size:
        restore_rng_state(states[rank])
        return True
    if rank == 0:
        log.warning(
            "checkpoint was written by %d processes, this run has %d: RNG states reseeded from "
            "(seed=%d, rank, step=%d); the run continues but is not bitwise identical to an uninterrupted one",
            len(states),
            world_size,
            seed,
            step,
        )
    reseed_all(derived_seed(seed, rank, step))
    return False
