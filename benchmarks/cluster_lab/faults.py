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
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cluster_lab import tracking
from cluster_lab.job import ROOT, Job
from dtrain.checkpoint.run_lock import STALE_SECONDS


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    inject: Callable[[Job, random.Random], dict]
    expect: str = "finish"
    min_runs: int = 5
    bound_s: float = 0.0
    lines: Callable[[Job, dict], list[str]] | None = None  # problems with what dtrain printed
    spec: dict = field(default_factory=dict)  # JobSpec fields this fault's job runs with
    compare_weights: bool = True  # False where the job differs from the baseline's by design
    waits_for_checkpoint: bool = True  # inject once the checkpoint of JobSpec.fault_at_step exists
    before: Callable[[Job], None] | None = None  # e.g. start a server the job needs
    after: Callable[[Job], None] | None = None


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


def kill_worker(job: Job, rng: random.Random) -> dict:
    """SIGKILL one training process of a host that does not hold the rendezvous store (the last)."""
    node = job.nodes[-1]
    for _ in range(50):
        if pids := _worker_pids(job, node):
            os.kill(pids[0], signal.SIGKILL)
            return {"host": node, "pid": pids[0], "at": time.time()}
        time.sleep(0.1)
    raise RuntimeError(f"no training process found on {node}")


def crash_host(job: Job, rng: random.Random, node: str | None = None) -> dict:
    """Every process of a host (the last, which does not hold the store, unless named) killed."""
    node = node or job.nodes[-1]
    down = rng.uniform(5, 30)
    at = job.supervisors[node].crash(down)
    return {"host": node, "down_s": round(down, 1), "at": at}


def crash_store_host(job: Job, rng: random.Random) -> dict:
    return crash_host(job, rng, node="node0")


def partition(seconds: float) -> Callable[[Job, random.Random], dict]:
    def inject(job: Job, rng: random.Random) -> dict:
        node = job.nodes[-1]
        job.cluster.set_link(node, up=False)
        timer = threading.Timer(seconds, job.cluster.set_link, args=(node,), kwargs={"up": True})
        timer.daemon = True
        timer.start()
        return {"host": node, "down_s": seconds, "at": time.time()}
    return inject


def lose_host(job: Job, rng: random.Random) -> dict:
    """The last host is gone for good; the others' supervisors run no new launcher either (a Job whose
    backoffLimit is spent): what is measured is that every launcher ends within the bound."""
    node = job.nodes[-1]
    job.supervisors[node].hold()
    for other in job.supervisors.values():
        other.max_restarts = len(other.invocations) - 1
    at = job.supervisors[node].crash(0)
    return {"host": node, "at": at, "held": True}


def lose_host_elastic(job: Job, rng: random.Random) -> dict:
    """The last host gone for good in an elastic job: the others carry on (their supervisors as usual)."""
    node = job.nodes[-1]
    job.supervisors[node].hold()
    return {"host": node, "at": job.supervisors[node].crash(0), "held": True}


def peer_death_lines(job: Job, info: dict) -> list[str]:
    """Every surviving host printed dtrain's line naming the dead peer's rank and host, and no other."""
    problems = []
    for node in job.nodes:
        if node == info["host"]:
            continue
        lines = [line for line in job.log_text(node).splitlines() if "dtrain: [rank" in line and "stopping" in line]
        named = {host for line in lines for host in re.findall(r"rank \d+ on (\S+) \(", line)}
        if named != {info["host"]}:
            problems.append(f"{node}'s dtrain line names {sorted(named) or 'no host'}, not just {info['host']}")
    return problems


def missing_host_lines(job: Job, info: dict) -> list[str]:
    problems = []
    for node in job.nodes:
        if node != info["host"] and not re.search(rf"dtrain: .*\b{info['host']}\b", job.log_text(node)):
            problems.append(f"{node} printed no dtrain line naming the missing host {info['host']}")
    return problems


def no_fault(job: Job, rng: random.Random) -> dict:
    return {"at": time.time()}


TRACE_MARKERS = ("Traceback", "frame #", "recvValueWithTimeout", "failed to shutdown", "Exception raised from")


def clean_lines(job: Job, info: dict) -> list[str]:
    """A clean finish prints no traceback or C++ stack on any host."""
    return [f"{node} printed {marker!r}" for node in job.nodes for marker in TRACE_MARKERS
            if marker in job.log_text(node)]


def single_run(job: Job, host: str, *extra: str, timeout: float = 300) -> tuple[int, str]:
    """`python -m dtrain.train` alone on `host` into the job's run_dir: a second job from another host."""
    argv = [sys.executable, "-m", "dtrain.train", *job.spec.train_args(job.run_dir), *extra]
    env = {k: v for k, v in job.spec.env("unused").items() if k not in ("NNODES", "RDZV_ENDPOINT", "RDZV_ID")}
    done = subprocess.run(job.cluster.command(host, argv), env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, (done.stdout + done.stderr).strip()


def second_job(job: Job, rng: random.Random) -> dict:
    code, output = single_run(job, job.nodes[-1])
    return {"host": job.nodes[-1], "at": time.time(), "exit": code, "output": output[-500:]}


def second_job_lines(job: Job, info: dict) -> list[str]:
    if info["exit"] != 2 or "node0" not in info["output"]:
        return [f"a second job from {info['host']} was not refused in one line naming node0: exit {info['exit']}, "
                f"{info['output'][-300:]!r}"]
    return []


def stale_lock(job: Job, rng: random.Random) -> dict:
    """Every host crashes (rank 0's node0 held the lock); node1 tries at once, then after the
    heartbeat bound: refused first, taken over second."""
    for sup in job.supervisors.values():
        sup.hold()
        sup.max_restarts = 0
        sup.crash(0)
    crashed = time.time()
    first = single_run(job, job.nodes[1])
    time.sleep(max(0.0, crashed + STALE_SECONDS + 5 - time.time()))
    second = single_run(job, job.nodes[1])
    return {"host": "node0", "at": crashed, "first": [first[0], first[1][-300:]],
            "second": [second[0], second[1][-300:]], "stale_s": STALE_SECONDS}


def stale_lock_lines(job: Job, info: dict) -> list[str]:
    problems = []
    if info["first"][0] != 2 or "node0" not in info["first"][1]:
        problems.append(f"a fresh lock of crashed node0 was not refused naming it: {info['first']}")
    if info["second"][0] != 0 or "took over" not in info["second"][1]:
        problems.append(f"the lock was not taken over after {info['stale_s']} s: {info['second']}")
    return problems


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("worker-kill", "kill -9 of one worker on the last host (it does not hold the store)", kill_worker,
          min_runs=10),
    Fault("host-crash", "every process of the last host killed, its launcher rerun 5-30 s later", crash_host,
          min_runs=10),
    Fault("store-host-crash", "every process of node0 (the rendezvous store's host) killed, rerun 5-30 s later",
          crash_store_host, min_runs=10),
    Fault("partition-10s", "the last host's link down for 10 s", partition(10)),
    Fault("peer-death", "a worker dies: every surviving host names its rank and host", kill_worker,
          lines=peer_death_lines),
    Fault("host-lost", "the last host crashes for good; the rest end naming it, then a rerun resumes", lose_host,
          expect="end", bound_s=150, lines=missing_host_lines),
    Fault("partition-long", "the last host's link down for 150 s, past every timeout (collective 60 s, join 60 s)",
          partition(150)),
    Fault("second-job", "a second job into the same run_dir from another host is refused", second_job,
          lines=second_job_lines),
    Fault("stale-lock", "every host crashes; node1 is refused at once, takes the lock over after the heartbeat bound",
          stale_lock, expect="checked", lines=stale_lock_lines),
    Fault("clean-finish", "the design card's bare torchrun (resnet200_preact, smoke) ends clean on every host",
          no_fault, lines=clean_lines, compare_weights=False, waits_for_checkpoint=False,
          spec={"bare_torchrun": True, "iters": 3}),
    Fault("mlflow-down", "the MLflow host (reached as mlflow-host) down for 20 s mid-run: FINISHED, every point",
          tracking.take_server_down, lines=tracking.every_point_arrived, spec=tracking.SPEC, compare_weights=False,
          before=tracking.start_server, after=tracking.stop_server),
    Fault("elastic", "NNODES=2:N, global batch 48; the last host leaves for good, the job goes on without it",
          lose_host_elastic, compare_weights=False, spec={"nnodes": "2:4", "extra": ("optim.batch_size=48",)}),
)}
