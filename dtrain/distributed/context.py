"""Who this process is in the job: read from torchrun's environment, one process when absent.

torchrun (and Slurm/Kubernetes launchers that mimic it) sets RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT; `init_process_group(init_method="env://")` reads them. Without them
this is a plain single process and no process group is created at all. Under torchrun a group is
formed even for one process, so `torchrun --nproc-per-node 1` runs DDP (and NCCL on a GPU) exactly
as a bigger job does: the cheapest way to check the distributed path on one device.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from dtrain.checkpoint.run_lock import release_all
from dtrain.config import DistributedConfig
from dtrain.distributed.lifetime import die_with_parent, launched_by_torchrun
from dtrain.distributed.peers import Peer, start_directory
from dtrain.distributed.process_group import form_process_group
from dtrain.errors import DtrainError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: no process group

    @property
    def is_distributed(self) -> bool:
        """More than one process, or a process group of one (torchrun --nproc-per-node 1):
        torchrun users expect DDP and sync BN then, as torchvision's references give them."""
        return self.world_size > 1 or self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """In place on a copy on this process's device; the sum over ranks (itself alone if single)."""
        if self.is_distributed:
            tensor = tensor.to(self.device)
            dist.all_reduce(tensor)
        return tensor

    def all_gather_object(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order (a collective)."""
        if not self.is_distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


def env_rank() -> int:
    """This process's rank from the environment, before any process group exists (0 if none)."""
    return int(os.environ.get("RANK", "0"))


AUTO = "auto"
DEVICE_CHOICES = (AUTO, "cpu", "cuda")  # train.device; auto: cuda when visible, else cpu
# distributed.backend -> the device type it needs (None: any); auto picks nccl on CUDA, gloo on CPU.
BACKEND_DEVICES: dict[str, str | None] = {"nccl": "cuda", "gloo": None}
BACKEND_CHOICES = (AUTO, *BACKEND_DEVICES)


def resolve_device(requested: str, local_rank: int) -> torch.device:
    """train.device: auto -> cuda:LOCAL_RANK when CUDA is there, else cpu."""
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise DtrainError("train.device=cuda but no CUDA device is visible; use train.device=cpu (or auto)")
    if requested == "cuda" or (requested == AUTO and cuda):
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise DtrainError(
                f"local rank {local_rank} has no GPU (only {count} visible): "
                f"use --nproc-per-node {count} or fewer"
            )
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_backend(requested: str, device: torch.device) -> str:
    """distributed.backend: auto -> nccl on CUDA, gloo on CPU (nccl cannot move CPU tensors)."""
    if requested == AUTO:
        return "nccl" if device.type == "cuda" else "gloo"
    needs = BACKEND_DEVICES[requested]
    if needs is not None and device.type != needs:
        raise DtrainError(f"distributed.backend={requested} needs {needs.upper()}; "
                          "use distributed.backend=gloo (or auto) on CPU")
    return requested


def init_distributed(dist_cfg: DistributedConfig, device_request: str) -> DistContext:
    """Join the job torchrun started (or stay a single process) and return who we are."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = env_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if launched_by_torchrun():
        die_with_parent()  # no orphan trains on (and writes checkpoints) after its agent is killed
    device = resolve_device(device_request, local_rank)
    if world_size <= 1 and not launched_by_torchrun():
        return DistContext(rank=0, local_rank=0, world_size=1, device=device, backend=None)
    backend = resolve_backend(dist_cfg.backend, device)
    if not dist.is_initialized():
        form_process_group(backend, rank, world_size, device, join_seconds=dist_cfg.init_timeout_seconds,
                           collective_minutes=dist_cfg.timeout_minutes)
        share_peer_directory(rank, world_size)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device,
                       backend=backend)


def share_peer_directory(rank: int, world_size: int) -> None:
    """Every rank learns every peer's host and liveness port, so that a survivor of a failure can
    name the rank and host that died (dtrain.distributed.peers)."""
    peers = start_directory()
    me = peers.me(rank, os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "0") or 0))
    gathered: list[Peer | None] = [None] * world_size
    dist.all_gather_object(gathered, me)
    peers.peers = [peer for peer in gathered if peer is not None]


def teardown(ctx: DistContext) -> None:
    """Leave the job: hand back the run_dir lock (dtrain.checkpoint.run_lock) and leave the
    process group cleanly (only after a run that ended the same way on all ranks)."""
    release_all()
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()
        linger_on_the_rendezvous_host()


# torchrun's c10d rendezvous store lives in the agent of the first node. If that agent exits
# before the other nodes' agents have closed the rendezvous, they print 11-13-frame C++ traces
# ("TCPStore recvValueWithTimeout failed", "failed to shutdown the rendezvous") after a clean
# finish, which operators read as a crash. The other agents close it right after their workers
# exit; the first node's workers give them this long first.
RENDEZVOUS_HOST_GRACE_SECONDS = 3.0


def linger_on_the_rendezvous_host() -> None:
    if int(os.environ.get("GROUP_RANK", "0")) == 0 and int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1:
        time.sleep(RENDEZVOUS_HOST_GRACE_SECONDS)
