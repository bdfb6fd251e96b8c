"""A directory of checkpoints: ckpt-{step:09d}.pt files, best.pt, retention and auto-resume.

Layout of the directory (RUN_DIR/checkpoints by default):
    ckpt-000001000.pt            the state after step 1000 (plus ckpt-000001000.pt.meta.json)
    best.pt                      a hard link to (or copy of) the checkpoint with the best metric
    best_ema.pt                  the same on the weight EMA's own metric (ema.enabled)
    ckpt-000002000.pt.corrupt    a checkpoint found damaged on resume, kept for inspection

Only rank 0 writes; every rank reads. The directory must be on a filesystem every rank sees
(a shared disk for multi-node runs). When a process group is up, load_latest lets rank 0 choose
the checkpoint and broadcasts its name, so all ranks resume from the same one.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
import torch.distributed as dist

from dtrain.checkpoint.async_writer import AsyncWriter
from dtrain.checkpoint.atomic import (
    TEMP_MARKER,
    CorruptCheckpoint,
    atomic_load,
    atomic_save,
    atomic_write_json,
    fsync_directory,
    meta_path,
    read_meta,
    temp_path,
)
from dtrain.checkpoint.format import (
    FORMAT_VERSION,
    NonFiniteStateError,
    UnusableCheckpoint,
    all_finite,
    to_cpu_copy,
    upgrade,
)
from dtrain.checkpoint.signals import collective_device
from dtrain.errors import DtrainError

log = logging.getLogger("dtrain.checkpoint")

CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
BEST_NAME = "best.pt"
BEST_EMA_NAME = "best_ema.pt"  # chosen on the EMA weights' metric (dtrain/engine/ema.py)
CORRUPT_SUFFIX = ".corrupt"


class ResumeError(DtrainError):
    """Rank 0's verdict on the checkpoints, raised identically on every rank."""

    # dtrain.distributed.failure prints errors carrying this flag once (rank 0), not once per rank.
    raised_on_every_rank = True


class UnusableResumeError(ResumeError, UnusableCheckpoint):
    """Rank 0 found checkpoints but none that loads (every one damaged), on every rank."""


StateT = TypeVar("StateT")


@runtime_checkable
class Stateful(Protocol[StateT]):
    """A part of the checkpoint: torch.distributed.checkpoint's protocol, with the type of the
    part's state named (a dict for most parts; every rank's list for the RNG; None for an absent
    AMP scaler). A state holds only tensors and plain values (dtrain/checkpoint/format.py)."""

    def state_dict(self) -> StateT: ...

    def load_state_dict(self, state: StateT) -> None: ...


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:09d}.pt"


class CheckpointManager:
    def __init__(self, directory: Path | str, keep_last: int = 3, keep_best: bool = True, rank: int = 0) -> None:
        """keep_last <= 0 keeps every checkpoint."""
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.rank = rank
        self.parts: dict[str, Stateful[Any]] = {}
        self.writer = AsyncWriter()
        self.blocked_seconds: list[float] = []  # time the caller was blocked, per save_parts
        if rank == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temp_files()

    # -- listing -------------------------------------------------------------------------------

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every ckpt-*.pt in the directory, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = CHECKPOINT_NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    @property
    def best_path(self) -> Path:
        return self.directory / BEST_NAME

    def best_metric(self, name: str = BEST_NAME) -> float | None:
        best = self.directory / name
        meta = read_meta(best) if best.is_file() else None
        return None if meta is None else meta.get("metric")

    # -- the run's parts (torchtitan style: registered once, composed at every save) --------------

    def register(self, parts: Mapping[str, Stateful[Any]]) -> None:
        """Name -> Stateful (state_dict/load_state_dict). Restored in registration order, so the
        RNG part goes last: nothing may draw random numbers between its restore and training."""
        self.parts.update(parts)

    def save_parts(self, step: int, *, metric: float | None = None, extra: dict[str, Any] | None = None,
                   blocking: bool = False, on_written: Callable[[], None] | None = None,
                   other_bests: Mapping[str, float] | None = None) -> Path:
        """Checkpoint the registered parts as step `step`. A collective (the RNG part gathers every
        rank's state, the finite check is agreed): call it on every rank at the same step.

        Training is blocked while the state is copied to the CPU; rank 0 writes it from a
        background thread (`blocking` waits for the file, as a final or preemption save must).
        A state holding NaN/Inf weights or optimiser state is never written. `other_bests`: best
        file name (best_ema.pt) -> a second metric of this state that file is chosen on.
        """
        started = time.perf_counter()
        state = {"format_version": FORMAT_VERSION, **(extra or {})}
        state.update({name: part.state_dict() for name, part in self.parts.items()})
        if not _agreed(all_finite({k: state.get(k) for k in ("model", "optimizer")})):
            raise NonFiniteStateError(
                f"the weights or optimiser state after step {step} are not finite (NaN/Inf): checkpoint not "
                f"written. Last good checkpoint: {self.latest_written() or 'none written yet'}. "
                "Lower optim.lr or check the data")
        path = self.directory / checkpoint_name(step)
        if self.rank == 0:
            snapshot = to_cpu_copy(state)
            # torch.cuda.is_initialized has no type hints.
            if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
                torch.cuda.synchronize()  # the pinned copies are complete before the writer reads them

            def job() -> None:
                self.save(snapshot, step, metric=metric, other_bests=other_bests)
                if on_written is not None:
                    on_written()

            self.writer.submit(job)
            if blocking:
                self.writer.wait()
        self.blocked_seconds.append(time.perf_counter() - started)
        return path

    def wait(self) -> None:
        """Until the save in flight (if any) is on disk; raises its error if it failed."""
        self.writer.wait()

    def latest_written(self) -> Path | None:
        """The newest checkpoint on disk, after any write in flight finished."""
        self.writer.wait()
        found = self.checkpoints()
        return found[-1][1] if found else None

    def record_metric(self, step: int, metric: float, lower_is_better: bool = True, best: str = BEST_NAME) -> None:
        """A metric measured after checkpoint `step` was written (the final evaluation runs after
        the final save): recorded in its sidecar, and `best` (best.pt) follows if it is the best.
        Another best file's metric (best_ema.pt) goes only into that file's sidecar."""
        path = self.directory / checkpoint_name(step)
        self.writer.wait()
        if self.rank != 0 or not path.is_file():
            return
        meta = {**(read_meta(path) or {}), "metric": metric, "lower_is_better": lower_is_better}
        if best == BEST_NAME:
            atomic_write_json(meta_path(path), meta)
        if self.keep_best and self._is_better(metric, lower_is_better, best):
            self._update_best(path, meta, best)

    def restore(self, state: dict[str, Any], path: Path | str) -> dict[str, Any]:
        """Load a checkpoint (any readable format version) into the registered parts."""
        state = upgrade(state, path)
        for name, part in self.parts.items():
            if name not in state:
                raise UnusableCheckpoint(f"checkpoint {path} has no {name!r} part (it was not written by "
                                         "`dtrain train`)")
            part.load_state_dict(state[name])
        return state

    # -- saving --------------------------------------------------------------------------------

    def save(self, state: dict[str, Any], step: int, metric: float | None = None, lower_is_better: bool = True,
             other_bests: Mapping[str, float] | None = None) -> Path:
        """Write `state` as the checkpoint of `step` (rank 0 only; other ranks just get the path).

        Not a collective: other ranks do not wait for the write. If they must (before exiting on
        preemption, say), the caller puts a barrier after it.
        """
        path = self.directory / checkpoint_name(step)
        if self.rank != 0:
            return path
        started = time.perf_counter()
        meta = {
            "step": step,
            "metric": metric,
            "lower_is_better": lower_is_better,
            "saved_at": time.time(),
            "torch": torch.__version__,
        }
        info = atomic_save(state, path, meta)
        if metric is not None and self.keep_best and self._is_better(metric, lower_is_better):
            self._update_best(path, info)
        for best, value in (other_bests or {}).items():
            if self.keep_best and self._is_better(value, lower_is_better, best):
                self._update_best(path, {**info, "metric": value}, best)
        self._apply_retention(keep=path)
        log.info("saved %s (%.1f MB in %.2f s)", path, info["bytes"] / 1e6, time.perf_counter() - started)
        return path

    def _is_better(self, metric: float, lower_is_better: bool, name: str = BEST_NAME) -> bool:
        if math.isnan(metric):
            return False
        best = self.best_metric(name)
        if best is None:
            return True
        return metric < best if lower_is_better else metric > best

    def _update_best(self, source: Path, info: dict[str, Any], name: str = BEST_NAME) -> None:
        # A hard link costs no space while the numbered checkpoint exists and survives its
        # deletion by retention; filesystems without links get a copy.
        best = self.directory / name
        best_meta = meta_path(best)
        best_meta.unlink(missing_ok=True)
        tmp = temp_path(best)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, best)
        atomic_write_json(best_meta, {**info, "file": name, "source": source.name})
        fsync_directory(self.directory)

    def _apply_retention(self, keep: Path) -> None:
        if self.keep_last <= 0:
            return
        existing = self.checkpoints()
        for _, path in existing[: max(0, len(existing) - self.keep_last)]:
            if path == keep:  # never the one just written, whatever newer-named files exist
                continue
            for victim in (path, meta_path(path)):
                victim.unlink(missing_ok=True)

    def _remove_stale_temp_files(self) -> None:
        # Left by a writer killed between creating its temp file and renaming it.
        for path in self.directory.iterdir():
            if path.name.startswith(".") and TEMP_MARKER in path.name:
                path.unlink(missing_ok=True)

    # -- loading -------------------------------------------------------------------------------

    def load(self, path: Path | str, map_location: Any = "cpu") -> Any:
        """What the file holds (a checkpoint dict of any format version, checked by format.upgrade)."""
        return atomic_load(path, map_location=map_location)

    def load_latest(self, map_location: Any = "cpu") -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint that loads, or None when the directory holds none.

        A damaged newer checkpoint is reported in one warning line, renamed to *.corrupt (so new
        checkpoints of the resumed run never sort behind it) and the previous one is used. When
        every checkpoint is damaged this raises rather than silently starting from scratch.
        With a process group up this is a collective: call it on every rank.
        """
        distributed = dist.is_available() and dist.is_initialized()
        chosen: Any = None
        decision: tuple[str, str] | None = None
        if self.rank == 0 or not distributed:
            try:
                chosen = self._choose_latest(map_location)
            except DtrainError as exc:
                chosen = exc
            decision = self._describe(chosen)
        if distributed:
            box = [decision]
            dist.broadcast_object_list(box, src=0)
            decision = box[0]
        assert decision is not None  # rank 0 (or a lone process) decided; the other ranks received it
        kind, value = decision
        if kind == "unusable":
            raise UnusableResumeError(value)
        if kind == "error":
            raise ResumeError(value)
        if kind == "none":
            return None
        if isinstance(chosen, tuple):
            return chosen
        path = self.directory / value
        if not path.is_file():
            raise DtrainError(
                f"rank {self.rank} cannot see checkpoint {path} that rank 0 chose: checkpoint.dir must be "
                "on a filesystem shared by every node"
            )
        return atomic_load(path, map_location=map_location), path

    @staticmethod
    def _describe(chosen: Any) -> tuple[str, str]:
        if isinstance(chosen, UnusableCheckpoint):
            return ("unusable", str(chosen))
        if isinstance(chosen, DtrainError):
            return ("error", str(chosen))
        if chosen is None:
            return ("none", "")
        return ("path", chosen[1].name)

    def _choose_latest(self, map_location: Any) -> tuple[dict[str, Any], Path] | None:
        candidates = [path for _, path in reversed(self.checkpoints())]
        if not candidates:
            return None
        damaged: list[tuple[Path, str]] = []
        for path in candidates:
            try:
                state = atomic_load(path, map_location=map_location)
            except CorruptCheckpoint as exc:
                damaged.append((path, str(exc)))
                continue
            for bad, reason in damaged:
                log.warning("checkpoint %s is corrupt (%s); resuming from %s instead", bad, reason, path)
                if self.rank == 0:
                    self._quarantine(bad)
            return state, path
        names = ", ".join(path.name for path, _ in damaged)
        raise UnusableCheckpoint(
            f"every checkpoint in {self.directory} is corrupt ({names}); move them out of that directory "
            "to start this run from scratch"
        )

    def _quarantine(self, path: Path) -> None:
        for source in (path, meta_path(path)):
            if source.exists():
                os.replace(source, source.with_name(source.name + CORRUPT_SUFFIX))
        fsync_directory(self.directory)


def _agreed(local_ok: bool) -> bool:
    """Every rank's verdict combined (all must be True), so every rank raises or none does."""
    if not (dist.is_available() and dist.is_initialized()):
        return local_ok
    flag = torch.tensor([0 if local_ok else 1], dtype=torch.int32, device=collective_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return not bool(flag.item())
