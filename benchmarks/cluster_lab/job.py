"""One training job on the simulated hosts, run with the README's own cluster command.

Every host runs `NNODES=N RDZV_ENDPOINT=node0:PORT launch/torchrun.sh RECIPE ...` under its
supervisor; the run directory and the data sit on the shared file system. A fault is injected
once the job has written the checkpoint of `fault_at_step`; the job then either finishes (its
final weights are compared bitwise with an uninterrupted run) or every launcher ends within the
fault's bound. Afterwards no process may be left in any host.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cluster_lab.hosts import Cluster
from cluster_lab.supervisor import Supervisor
from dtrain.checkpoint.atomic import read_checkpoint, verify
from dtrain.tracking.jsonl import JSONL_NAME, read_records

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT_PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "data_prep")])  # dtrain, dtrain_prep
LAUNCHER = ROOT / "launch" / "torchrun.sh"
RDZV_PORT = 29400


@dataclass
class JobSpec:
    hosts: int
    data_root: Path
    iters: int = 40
    checkpoint_every: int = 5
    fault_at_step: int = 10
    rdzv_join_timeout: int = 60
    collective_timeout_minutes: int = 1
    nnodes: str | None = None  # MIN:MAX for an elastic job; default: every host
    bare_torchrun: bool = False  # the design card's own `torchrun --nnodes N ... -m dtrain.train`
    extra: tuple[str, ...] = ()

    def command(self, run_dir: Path) -> list[str]:
        if not self.bare_torchrun:
            return ["bash", str(LAUNCHER), *self.train_args(run_dir)]
        return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={self.hosts}", "--nproc-per-node=1",
                "--rdzv-backend=c10d", f"--rdzv-endpoint=node0:{RDZV_PORT}", f"--rdzv-id=card-{run_dir.name}",
                "-m", "dtrain.train", "resnet200_preact", "train.smoke=true", "data.loader=synthetic",
                "optim.batch_size=8", "schedule.max_iters=3", "tracking.backend=jsonl", "train.device=cpu",
                f"run_dir={run_dir}", *self.extra]

    def train_args(self, run_dir: Path) -> list[str]:
        return ["digits_resnet20", f"data.root={self.data_root}", f"schedule.max_iters={self.iters}",
                "schedule.epochs=null", "eval.every_epochs=0", "tracking.backend=jsonl", f"run_dir={run_dir}",
                f"checkpoint.every_iters={self.checkpoint_every}", "checkpoint.every_minutes=0",
                "checkpoint.keep_last=100", "train.device=cpu", "train.log_every_iters=5",
                f"distributed.timeout_minutes={self.collective_timeout_minutes}", *self.extra]

    def env(self, rdzv_id: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("SLURM_", "PET_", "RDZV_", "NNODES", "TORCHELASTIC", "MASTER_"))}
        return {**clean, "PYTHON": sys.executable, "NNODES": self.nnodes or str(self.hosts), "NPROC_PER_NODE": "1",
                "RDZV_ENDPOINT": f"node0:{RDZV_PORT}", "RDZV_ID": rdzv_id, "MAX_RESTARTS": "3",
                "RDZV_JOIN_TIMEOUT": str(self.rdzv_join_timeout), "OMP_NUM_THREADS": "1",
                "MLFLOW_TRACKING_URI": "", "PYTHONPATH": CHECKOUT_PYTHONPATH}


@dataclass
class Job:
    cluster: Cluster
    spec: JobSpec
    run_dir: Path
    logs: Path
    supervisors: dict[str, Supervisor] = field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        return [f"node{i}" for i in range(self.spec.hosts)]

    def start(self, restart_delay: float = 2.0) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        env = self.spec.env(rdzv_id=f"lab-{self.run_dir.name}-{time.monotonic_ns()}")
        argv = self.spec.command(self.run_dir)
        for node in self.nodes:
            sup = Supervisor(self.cluster, node, argv, env, self.logs / f"{node}.log", restart_delay=restart_delay)
            self.supervisors[node] = sup
            sup.start()

    def checkpoint(self, step: int) -> Path:
        return self.run_dir / "checkpoints" / f"ckpt-{step:09d}.pt"

    def wait_for_step(self, step: int, timeout: float) -> bool:
        deadline = time.time() + timeout
        while not self.checkpoint(step).exists():
            if time.time() > deadline or not any(s.running() for s in self.supervisors.values()):
                return False
            time.sleep(0.2)
        return True

    def wait(self, timeout: float) -> bool:
        """True when every supervisor finished within `timeout` seconds."""
        deadline = time.time() + timeout
        return all(sup.wait(deadline) for sup in self.supervisors.values())

    def stop(self) -> None:
        for sup in self.supervisors.values():
            sup.stop()

    def leftover_processes(self, grace: float = 15.0) -> dict[str, list[int]]:
        """Processes still alive in each host `grace` seconds after its launcher ended (call it once
        every supervisor has finished, before stop())."""
        deadline = time.time() + grace
        while True:
            left = {node: self.cluster.hosts[node].pids() for node in self.nodes if not self.supervisors[node].held}
            left = {node: pids for node, pids in left.items() if pids}
            if not left or time.time() > deadline:
                return left
            time.sleep(0.5)

    def log_text(self, node: str) -> str:
        path = self.logs / f"{node}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def final_step(self) -> int | None:
        path = self.run_dir / "final_metrics.json"
        return json.loads(path.read_text()).get("step") if path.is_file() else None

    def resume_times(self) -> list[float]:
        """When each restarted worker group logged its first record (every "run" record after the first)."""
        path = self.run_dir / JSONL_NAME
        if not path.is_file():
            return []
        starts = [record["time"] for record in read_records(path) if record.get("type") == "run"]
        return starts[1:]


def model_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint, read as dtrain reads it: digest checked, in the current format."""
    return read_checkpoint(checkpoint)["model"]


def bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def unreadable_checkpoints(run_dir: Path) -> list[str]:
    """Checkpoints that exist but do not pass the digest check (a lost checkpoint)."""
    bad = []
    for path in sorted((run_dir / "checkpoints").glob("*.pt")):
        try:
            verify(path)
        except Exception as exc:  # noqa: BLE001 - report every kind of damage
            bad.append(f"{path.name}: {exc}")
    return bad
