"""launch/torchrun.sh end to end: two "nodes" on 127.0.0.1 meet at a c10d rendezvous and train
together; when a training process dies, torchrun's --max-restarts brings the group back and the
run resumes from its last checkpoint instead of starting over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import children, free_port

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN_SH = ROOT / "launch" / "torchrun.sh"

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def start_nodes(run_dir: Path, max_iters: int, every_iters: int, max_restarts: int, logs: Path) -> list:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PET_", "RDZV_", "NNODES"))}
    env.update(PYTHON=sys.executable, NNODES="2", NPROC_PER_NODE="1", RDZV_ENDPOINT=f"127.0.0.1:{free_port()}",
               RDZV_ID=f"test-{os.getpid()}", MAX_RESTARTS=str(max_restarts), OMP_NUM_THREADS="1",
               MLFLOW_TRACKING_URI="")
    args = ["digits_resnet20", "data.loader=synthetic", "data.synthetic_samples=64",
            "data.synthetic_image_size=32", "optim.batch_size=16", f"schedule.max_iters={max_iters}",
            "schedule.epochs=null", "eval.every_epochs=0", "tracking.backend=jsonl", f"run_dir={run_dir}",
            "train.device=cpu", f"checkpoint.every_iters={every_iters}", "checkpoint.every_minutes=0"]
    nodes = []
    for node in range(2):
        with open(logs / f"node{node}.log", "w") as log:  # the child holds its own copy
            nodes.append(subprocess.Popen(["bash", str(TORCHRUN_SH), *args], env=env, cwd=ROOT, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
    return nodes


def wait_all(nodes: list, logs: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        for process in nodes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for process in nodes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    for node, process in enumerate(nodes):
        assert process.returncode == 0, (logs / f"node{node}.log").read_text()[-3000:]


def test_two_nodes_train_through_torchrun_sh(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    nodes = start_nodes(run_dir, max_iters=4, every_iters=0, max_restarts=0, logs=tmp_path)
    wait_all(nodes, tmp_path, timeout=300)
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["world_size"] == 2 and final["step"] == 4 and final["stopped"] == "finished"
    assert (run_dir / "checkpoints" / "ckpt-000000004.pt").is_file()


def test_a_killed_worker_is_restarted_and_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    nodes = start_nodes(run_dir, max_iters=40, every_iters=2, max_restarts=2, logs=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "checkpoints" / "ckpt-000000002.pt").exists():
            assert time.monotonic() < deadline and all(p.poll() is None for p in nodes), "no checkpoint written"
            time.sleep(0.1)
        # torchrun.sh exec's torchrun, so node 1's process is the agent; its child is the worker.
        (worker,) = children(nodes[1].pid)
        os.kill(worker, signal.SIGKILL)  # a training process dies (OOM killer, hardware fault)
    except BaseException:
        for process in nodes:
            os.killpg(process.pid, signal.SIGKILL)
        raise
    wait_all(nodes, tmp_path, timeout=400)
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["step"] == 40 and final["world_size"] == 2
    output = (tmp_path / "node0.log").read_text() + (tmp_path / "node1.log").read_text()
    assert "resumed from" in output  # not a fresh start after the restart
