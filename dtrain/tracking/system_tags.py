"""Tags that say where and with what a run ran: git commit, library versions, hosts, devices.

Never raises and never imports the heavy libraries it reports on (versions come from package
metadata, not from importing DALI/FFCV/DeepSpeed, which takes seconds).
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Sequence

# tag suffix -> distributions that provide it (the first one installed wins)
VERSIONED_PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "numpy": ("numpy",),
    "dali": ("nvidia-dali-cuda120", "nvidia-dali-cuda130", "nvidia-dali-cuda110"),
    "ffcv": ("ffcv",),
    "deepspeed": ("deepspeed",),
    "dtrain": ("dtrain",),
}
GIT_TIMEOUT_SECONDS = 5.0


def system_tags(world_size: int, device_names: Sequence[str] | None = None) -> dict[str, str]:
    """Run tags for MLflow; `mlflow.source.git.commit` is the tag MLflow's UI shows as the commit."""
    tags = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "world_size": str(world_size),
        "version.python": platform.python_version(),
        "command": " ".join(sys.argv)[:8000],
    }
    for name, distributions in VERSIONED_PACKAGES.items():
        version = _installed_version(distributions)
        if version:
            tags[f"version.{name}"] = version
    devices = list(device_names) if device_names is not None else local_devices()
    tags["devices"] = ", ".join(devices)[:8000]
    tags["device_count_local"] = str(len(devices))
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git.commit"] = commit
        dirty = git_dirty()
        if dirty is not None:
            tags["git.dirty"] = str(dirty).lower()
    return tags


def git_commit(directory: Path | None = None) -> str | None:
    """HEAD of the repository holding dtrain's code (or `directory`); None outside git or on any error."""
    out = _git(["rev-parse", "HEAD"], directory)
    return out.strip() or None if out else None


def git_dirty(directory: Path | None = None) -> bool | None:
    """Whether tracked files differ from HEAD; None outside git or on any error."""
    out = _git(["status", "--porcelain", "--untracked-files=no"], directory)
    return None if out is None else bool(out.strip())


def _git(args: list[str], directory: Path | None = None) -> str | None:
    cwd = directory or Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _installed_version(distributions: tuple[str, ...]) -> str | None:
    for distribution in distributions:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def local_devices() -> list[str]:
    torch = sys.modules.get("torch")  # only if the caller already imported it: a training run has
    if torch is not None and torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return [f"cpu ({platform.processor() or platform.machine()})"]
