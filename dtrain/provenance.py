"""Tags that say where and with what a run ran: the code (git commit, dtrain's version and a
digest of its source), library versions, hosts, devices.

Never raises and never imports the heavy libraries it reports on (versions come from package
metadata, not from importing DALI/FFCV/DeepSpeed, which takes seconds).

A run is always traceable to its code: installed from a wheel there is no git repository, so the
commit is missing, but `source.digest` is there in every install: a SHA-256 over dtrain's own
files as this process runs them (the dtrain and dtrain_prep packages, the recipes and launch/),
which is the same for a checkout and for the wheel built from it. `dtrain --version` prints it:
run that in a checkout to find the code a run used.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import platform
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

import dtrain
from dtrain.errors import DtrainError
from dtrain.resources import resource_dir

# tag suffix -> distributions that provide it (the first one installed wins)
VERSIONED_PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "numpy": ("numpy",),
    "dali": ("nvidia-dali-cuda120", "nvidia-dali-cuda130", "nvidia-dali-cuda110"),
    "ffcv": ("ffcv",),
    "deepspeed": ("deepspeed",),
}
GIT_TIMEOUT_SECONDS = 5.0
# Folders dtrain reads at run time (dtrain.resources), part of the code a run used.
RESOURCE_FOLDERS = ("configs", "launch")
# Compiled files; and the wheel's copy of configs/ and launch/ inside the package, hashed as those folders.
SKIPPED_PARTS = ("__pycache__", "_resources")


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
    tags["version.dtrain"] = dtrain.__version__  # the code imported, whatever else is installed
    digest = source_digest()
    if digest:
        tags["source.digest"] = digest
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git.commit"] = commit
        dirty = git_dirty()
        if dirty is not None:
            tags["git.dirty"] = str(dirty).lower()
    return tags


@functools.lru_cache(maxsize=1)
def source_digest() -> str | None:
    """'sha256:HEX' of dtrain's code as installed here; None if it cannot be read."""
    try:
        return "sha256:" + digest_files(source_files())
    except (OSError, ImportError, DtrainError):  # a tag is never worth a failed run
        return None


def source_files() -> dict[str, Path]:
    """{name that is the same in a checkout and in the wheel: file} for dtrain's code and resources."""
    prep = importlib.import_module("dtrain_prep")  # its folder: data_prep/dtrain_prep/ in a checkout
    roots = {"dtrain": Path(dtrain.__file__).resolve().parent, "dtrain_prep": Path(prep.__path__[0]).resolve()}
    roots.update({folder: resource_dir(folder) for folder in RESOURCE_FOLDERS})
    files = {}
    for prefix, root in roots.items():
        pattern = "*.py" if prefix in ("dtrain", "dtrain_prep") else "*"
        for path in root.rglob(pattern):
            relative = path.relative_to(root)
            if path.is_file() and not path.name.endswith(".pyc") and not set(relative.parts) & set(SKIPPED_PARTS):
                files[f"{prefix}/{relative.as_posix()}"] = path
    return files


def digest_files(files: dict[str, Path] | Iterable[tuple[str, Path]]) -> str:
    """SHA-256 over (name, content digest) of every file, in name order."""
    items = sorted(files.items() if isinstance(files, dict) else files)
    total = hashlib.sha256()
    for name, path in items:
        total.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return total.hexdigest()


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

