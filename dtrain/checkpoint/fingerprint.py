"""Safe auto-resume: a run directory remembers the settings that change results.

`checkpoint.resume=auto` continues whatever checkpoints it finds in the run's checkpoint
directory. A rerun of the same recipe with another learning rate into the default runs/RECIPE
would silently continue the old run; so the first start of a run writes RUN_DIR/fingerprint.json
(every setting except those in IGNORED, which do not change what is learned: paths, logging,
tracking, workers, checkpoint cadence), and a resume with different settings is refused with the
changed keys and the two ways out. `checkpoint.resume=force` continues anyway; the change is
logged and the fingerprint updated.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from dtrain.checkpoint.manager import CHECKPOINT_NAME
from dtrain.config import RunConfig, flatten, to_dict
from dtrain.config_renames import renamed_flat
from dtrain.errors import ConfigError

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
# Keys (or whole sections, ending in ".") that may change between the runs of one run directory.
IGNORED = (
    "recipe", "description", "paper", "run_dir", "data.root", "data.workers", "data.ffcv_os_cache",
    "train.device", "train.compile", "train.channels_last", "train.log_every_iters",
    "train.max_epochs_override", "distributed.backend", "distributed.timeout_minutes",
    "eval.batch_size", "eval.max_samples", "checkpoint.", "tracking.",
)
SHOWN_CHANGES = 4  # the error line names at most this many keys


def result_settings(cfg: RunConfig) -> dict[str, Any]:
    """The flattened settings that change what a run learns."""
    flat = flatten(to_dict(cfg))
    return {key: value for key, value in flat.items()
            if not any(key == i or (i.endswith(".") and key.startswith(i)) for i in IGNORED)}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The keys whose values differ. A key the recorded fingerprint lacks (a newer dtrain added
    it) counts as changed only where its value is not the default, i.e. not the behaviour the run
    had before the key existed: an upgrade alone never blocks a resume."""
    defaults = result_settings(RunConfig())
    old = renamed_flat(old)  # a fingerprint written before a key was renamed (dtrain.config_renames)
    return sorted(key for key in old.keys() | new.keys()
                  if old.get(key, defaults.get(key)) != new.get(key))


def has_checkpoints(directory: Path) -> bool:
    """Whether `directory` holds any ckpt-*.pt (a run to continue, or to protect from a fresh one)."""
    return directory.is_dir() and any(CHECKPOINT_NAME.match(p.name) for p in directory.iterdir())


def new_directory_key(cfg: RunConfig) -> str:
    """The setting that gives a run an empty checkpoint directory: checkpoint.dir when it is set
    (a new run_dir would keep it), else run_dir."""
    return "checkpoint.dir" if cfg.checkpoint.dir else "run_dir"


def check_resume(cfg: RunConfig, rank: int = 0) -> None:
    """Refuse an auto-resume whose settings differ from the run directory's; record them otherwise.

    Called on every rank before training (every rank reads the same file); rank 0 writes."""
    if cfg.checkpoint.resume not in ("auto", "force"):
        return  # never: a fresh run; a path: the user chose the checkpoint
    path = cfg.resolved_run_dir() / FINGERPRINT_FILE
    current = result_settings(cfg)
    if has_checkpoints(cfg.resolved_checkpoint_dir()) and path.is_file():
        recorded = _read(path)
        changed = changed_keys(recorded, current)
        if changed and cfg.checkpoint.resume == "auto":
            shown = ", ".join(f"{k} {_text(recorded.get(k))} -> {_text(current.get(k))}"
                              for k in changed[:SHOWN_CHANGES])
            more = f" and {len(changed) - SHOWN_CHANGES} more" if len(changed) > SHOWN_CHANGES else ""
            raise ConfigError(
                f"{cfg.resolved_run_dir()} holds a run with other settings ({shown}{more}): give this run "
                f"its own {new_directory_key(cfg)}=..., or continue that run anyway with checkpoint.resume=force")
        if changed and rank == 0:
            log.warning("checkpoint.resume=force: resuming %s with changed settings: %s",
                        cfg.resolved_run_dir(), ", ".join(changed))
        if not changed:
            return
    if rank == 0:
        _write(path, current)


def _text(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # unreadable: treated as a run with unknown settings, every key differs
    return data.get("settings", {}) if isinstance(data, dict) else {}


def _write(path: Path, settings: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".tmp{os.getpid()}")
    partial.write_text(json.dumps({"settings": settings}, indent=1, sort_keys=True) + "\n")
    os.replace(partial, path)
