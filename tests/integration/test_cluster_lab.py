"""The multi-host lab (benchmarks/cluster_lab) on simulated hosts: network namespaces as root.

The reduced lab runs in the default suite: 2 hosts, a worker killed and a whole host crashed,
each run ending bitwise equal to an uninterrupted one with no process left behind. The full
fault set on 4 hosts is slow. Where namespaces cannot be made (not root, no `ip`), both skip
with the reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cluster_lab.hosts import PREFIX, namespaces_available  # noqa: E402

REASON = namespaces_available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"cannot simulate hosts here: {REASON}")


def run_lab(out: Path, *args: str, timeout: float) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cluster_lab"), "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    report = out / "cluster_lab.json"
    assert report.is_file(), f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(report.read_text())
    failed = [r for r in result["runs"] if not r["ok"]]
    assert done.returncode == 0 and not failed, json.dumps(failed, indent=1)[-4000:]
    return result


def namespaces_of_ended_labs() -> list[str]:
    """Namespaces whose lab (its PID is in the name) has exited: what a lab failed to remove.
    Labs still running (a benchmark beside the suite) keep theirs."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    names = [line.split()[0] for line in listed if line.startswith(PREFIX)]
    owner = re.compile(rf"{PREFIX}(\d+)")
    return [name for name in names if not Path("/proc", owner.match(name).group(1)).exists()]


def test_two_hosts_survive_a_worker_kill_and_a_host_crash(tmp_path: Path) -> None:
    result = run_lab(tmp_path, "--hosts", "2", "--faults", "worker-kill,host-crash", "--runs", "1",
                     "--iters", "20", timeout=900)
    assert {name: s["ok"] for name, s in result["summary"].items()} == {
        "baseline": 1, "worker-kill": 1, "host-crash": 1}
    assert all(r.get("recovery_s") for r in result["runs"] if r["fault"])  # a restart really happened
    assert namespaces_of_ended_labs() == []  # the lab removed its hosts


@pytest.mark.slow
def test_four_hosts_every_fault(tmp_path: Path) -> None:
    result = run_lab(tmp_path, "--hosts", "4", "--faults", "all", "--runs", "1", timeout=3600)
    assert all(s["ok"] == s["runs"] for s in result["summary"].values())
