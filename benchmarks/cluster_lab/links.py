"""Slow links: benchmarks/allreduce_share.py on N simulated hosts whose links a token bucket limits.

For each (hosts, Mbit/s) the lab puts `tc tbf` on both directions of every host's link, runs the
benchmark under torchrun on every host (one process each, so the ring estimate 2(N-1)/N x bytes /
bandwidth describes the link), and keeps the JSON rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

from cluster_lab.hosts import Cluster
from cluster_lab.job import CHECKOUT_PYTHONPATH, RDZV_PORT, ROOT

BENCHMARK = ROOT / "benchmarks" / "allreduce_share.py"


def wait_all(processes: list[subprocess.Popen], timeout: float) -> list[int | None]:
    try:
        return [p.wait(timeout=timeout) for p in processes]
    except subprocess.TimeoutExpired:
        return [p.poll() for p in processes]


def measure(cluster: Cluster, hosts: int, mbit: int, out: Path, extra: list[str], timeout: float) -> dict:
    nodes = [f"node{i}" for i in range(hosts)]
    for node in cluster.hosts:
        cluster.limit_bandwidth(node, mbit if node in nodes else None)
    result = out / f"links-{hosts}x{mbit}mbit.json"
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={hosts}", "--nproc-per-node=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint=node0:{RDZV_PORT}", f"--rdzv-id=links-{hosts}-{mbit}",
            str(BENCHMARK), "--link-mbit", str(mbit), "--out", str(result), *extra]
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": CHECKOUT_PYTHONPATH,
           "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(open(out / f"links-{hosts}x{mbit}mbit-{node}.log", "w")) for node in nodes]
        processes = [subprocess.Popen(cluster.command(node, argv), env=env, cwd=ROOT, start_new_session=True,
                                      stdout=log, stderr=subprocess.STDOUT)
                     for node, log in zip(nodes, logs, strict=True)]
        codes = wait_all(processes, timeout)
    for node in nodes:
        cluster.crash(node)
    for node in cluster.hosts:
        cluster.limit_bandwidth(node, None)
    if any(codes) or not result.is_file():
        return {"hosts": hosts, "mbit": mbit, "error": f"exit codes {codes}; see {out}/links-{hosts}x{mbit}mbit-*.log"}
    return {"hosts": hosts, "mbit": mbit, **json.loads(result.read_text())}
