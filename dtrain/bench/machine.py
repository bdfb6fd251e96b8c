"""The machine a figure was measured on: commit, date, load, and whether it was quiet.

Other processes' load moves img/s by up to 2x on a shared host (benchmarks/RESULTS.md), so every
benchmark records the load beside its figures and flags a busy machine: `dtrain bench`, and the
scripts in benchmarks/ (which import this, not torch, to stay light).
"""

from __future__ import annotations

import os
import platform
import time

from dtrain.provenance import git_commit, git_dirty

MAX_QUIET_LOAD_PER_CORE = 1.5


def commit_of_this_code() -> str | None:
    """HEAD, marked "+dirty" when tracked files differ: the code a figure was measured with."""
    commit = git_commit()
    return commit + ("+dirty" if git_dirty() else "") if commit else None


def machine_environment() -> dict:
    """commit, date, CPU count and load average now, load per core and the quiet flag."""
    load = [round(v, 2) for v in os.getloadavg()]
    per_core = round(load[0] / (os.cpu_count() or 1), 2)
    return {
        "cpu_count": os.cpu_count(), "load_average": load, "load_per_core": per_core,
        "quiet": per_core <= MAX_QUIET_LOAD_PER_CORE,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit_of_this_code(),
        "python": platform.python_version(),
    }


def not_quiet_warning(env: dict) -> str | None:
    """The line to print when `env` (from machine_environment) was not quiet; None when it was."""
    if env["quiet"]:
        return None
    return (f"NOT QUIET: load {env['load_per_core']} per core > {MAX_QUIET_LOAD_PER_CORE}; do not record these "
            "figures as quiet-machine results (flagged quiet=false in the JSON)")
