"""The benchmark scripts, smoke-run measuring nothing: the JSON a figure would be recorded with
(`dtrain bench` itself is tested in tests/unit/test_bench.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from processes import ROOT

from dtrain.bench.machine import MAX_QUIET_LOAD_PER_CORE, commit_of_this_code


@pytest.mark.parametrize("script, args", [("bench_prepare.py", ["--images", "0", "--memory-counts", "", "--json"]),
                                          ("faults.py", ["--runs", "0", "--out"])])
def test_benchmark_scripts_record_the_environment_in_their_json(tmp_path: Path, script: str, args: list[str]) -> None:
    """Smoke runs measuring nothing: the JSON a figure would be recorded with."""
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    env = json.loads(out.read_text())["environment"]
    assert env["commit"] == commit_of_this_code() and env["date_utc"].endswith("Z") and len(env["load_average"]) == 3
    assert env["quiet"] is (env["load_per_core"] <= MAX_QUIET_LOAD_PER_CORE)
    assert ("NOT QUIET" in done.stdout) is (not env["quiet"])


