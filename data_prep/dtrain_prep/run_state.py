"""What a prepare run is pinned to (OUT/.work/state.json), and how another run differs from it.

A run that resumes, and a run over a finished output, must be the same run: same dataset, same
options that shape the output, same source files and labels. When they are not, the error says
what differs in the user's words (the command-line flags), so the fix is plain.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import layout

STATE = f"{layout.WORK_DIR}/state.json"

# Keys of PrepareOptions.pinned() (flattened) -> the flag that sets them.
OPTION_FLAGS = {
    "formats": "--formats", "shard_size": "--shard-size", "copy_jpegs": "--copy-jpegs", "minival": "--minival",
    "image.max_side": "--max-side", "image.jpeg_quality": "--jpeg-quality", "image.max_pixels": "--max-pixels",
    "ffcv.mode": "--ffcv-mode", "ffcv.max_side": "--ffcv-max-side", "ffcv.jpeg_quality": "--ffcv-quality",
    "ffcv.compress_probability": "--ffcv-compress-probability",
}


def plan_digest(splits: dict) -> str:
    """Every candidate's split, position, source and label: changes when the source does."""
    digest = hashlib.sha256()
    for split, samples in sorted(splits.items()):
        for s in samples:
            digest.update(f"{split}\t{s.position}\t{s.source}\t{s.label}\n".encode())
    return digest.hexdigest()


def run_state(dataset: str, pinned_options: dict, splits: dict) -> dict:
    # Through JSON, as it is stored: tuples become lists, so equal states compare equal.
    return json.loads(json.dumps({"dataset": dataset, "options": pinned_options, "plan": plan_digest(splits)}))


def recorded_state(out: Path) -> dict | None:
    """The pinned state of the run that wrote OUT; for a finished output whose .work is gone, what
    summary.json recorded (its options; the source cannot be compared then)."""
    if (out / STATE).exists():
        return json.loads((out / STATE).read_text())
    if (out / layout.SUMMARY).exists():
        summary = json.loads((out / layout.SUMMARY).read_text())
        options = {k: v for k, v in summary.get("options", {}).items() if k != "workers"}
        return {"dataset": summary.get("dataset"), "options": options, "plan": None}
    return None


def _flat(options: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in options.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return flat


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else "unset" if value is None else str(value)


def differences(recorded: dict, state: dict) -> str:
    """'' when state is the recorded run; else what differs, e.g. 'other options: --shard-size 5 (now 7)'."""
    if recorded.get("dataset") != state["dataset"]:
        return f"another dataset: {recorded.get('dataset')}, not {state['dataset']}"
    old, new = _flat(recorded.get("options", {})), _flat(state["options"])
    changed = [f"{OPTION_FLAGS.get(key, key)} {_shown(old[key])} (now {_shown(value)})"
               for key, value in new.items() if key in old and old[key] != value]  # absent: pinned later
    if changed:
        return "other options: " + ", ".join(changed)
    if recorded.get("plan") not in (None, state["plan"]):
        return "another source: its files or labels differ"
    return ""
