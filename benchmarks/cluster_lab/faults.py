"""The faults the lab injects, by name: what each does to the running job and what must follow.

Each fault acts once the job has written the checkpoint of JobSpec.fault_at_step. `expect` says
how the job must end: "finish" (every host exits 0 and the final weights are bitwise equal to an
uninterrupted run), or "end" (every launcher ends within `bound_s` of the fault with dtrain's
line naming the cause, and then a rerun of the same command resumes and finishes bitwise equal).
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster_lab.job import Job


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    inject: Callable[[Job, random.Random], dict]
    expect: str = "finish"
    min_runs: int = 5
    bound_s: float = 0.0
    lines: Callable[[Job, dict], list[str]] | None = None  # problems with what dtrain printed


def _worker_pids(job: Job, node: str) -> list[int]:
    """Training processes of `node`: the children of its torchrun agent (not their loader workers)."""
    def argv(pid: int) -> list[bytes]:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return []

    def parent(pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            return 0

    return [pid for pid in job.cluster.hosts[node].pids()
            if b"dtrain.train" in argv(pid) and b"torch.distributed.run" in argv(parent(pid))]


def kill_worker(job: Job, rng: random.Random, node: str = "node2") -> dict:
    """SIGKILL one training process of a host that does not hold the rendezvous store."""
    for _ in range(50):
        if pids := _worker_pids(job, node):
            os.kill(pids[0], signal.SIGKILL)
            return {"host": node, "pid": pids[0], "at": time.time()}
        time.sleep(0.1)
    raise RuntimeError(f"no training process found on {node}")


def crash_host(job: Job, rng: random.Random, node: str = "node2") -> dict:
    down = rng.uniform(5, 30)
    at = job.supervisors[node].crash(down)
    return {"host": node, "down_s": round(down, 1), "at": at}


def crash_store_host(job: Job, rng: random.Random) -> dict:
    return crash_host(job, rng, node="node0")


def partition(seconds: float, node: str = "node2") -> Callable[[Job, random.Random], dict]:
    def inject(job: Job, rng: random.Random) -> dict:
        job.cluster.set_link(node, up=False)
        timer = threading.Timer(seconds, job.cluster.set_link, args=(node,), kwargs={"up": True})
        timer.daemon = True
        timer.start()
        return {"host": node, "down_s": seconds, "at": time.time()}
    return inject


def lose_host(job: Job, rng: random.Random, node: str = "node3") -> dict:
    """node3 is gone for good; the others' supervisors run no new launcher either (a Job whose
    backoffLimit is spent): what is measured is that every launcher ends within the bound."""
    job.supervisors[node].hold()
    for other in job.supervisors.values():
        other.max_restarts = len(other.invocations) - 1
    at = job.supervisors[node].crash(0)
    return {"host": node, "at": at, "held": True}


def peer_death_lines(job: Job, info: dict) -> list[str]:
    """Every surviving host printed dtrain's line naming the dead peer's host (and its rank)."""
    problems = []
    for node in job.nodes:
        if node == info["host"]:
            continue
        text = job.log_text(node)
        if not re.search(rf"dtrain: .*\b{info['host']}\b.*rank", text) and \
                not re.search(rf"dtrain: .*rank \d+.*\b{info['host']}\b", text):
            problems.append(f"{node} printed no dtrain line naming {info['host']} and its rank")
    return problems


def missing_host_lines(job: Job, info: dict) -> list[str]:
    problems = []
    for node in job.nodes:
        if node != info["host"] and not re.search(rf"dtrain: .*\b{info['host']}\b", job.log_text(node)):
            problems.append(f"{node} printed no dtrain line naming the missing host {info['host']}")
    return problems


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("worker-kill", "kill -9 of one worker on a host that does not hold the store", kill_worker, min_runs=10),
    Fault("host-crash", "every process of node2 killed, its launcher rerun 5-30 s later", crash_host, min_runs=10),
    Fault("store-host-crash", "every process of node0 (the rendezvous store's host) killed, rerun 5-30 s later",
          crash_store_host, min_runs=10),
    Fault("partition-10s", "node2's link down for 10 s", partition(10)),
    Fault("peer-death", "a worker dies: every surviving host names its rank and host", kill_worker,
          lines=peer_death_lines),
    Fault("host-lost", "node3 crashes and never comes back; the rest end, then a rerun resumes", lose_host,
          expect="end", bound_s=150, lines=missing_host_lines),
)}
