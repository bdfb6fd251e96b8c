"""Run a function on a few gloo processes of this machine and collect what each rank returns."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from processes import free_port


def run_on_gloo(body: Callable[[int], Any], world: int) -> dict[int, Any]:
    """{rank: body(rank)} with a gloo process group of `world` processes formed around each call.
    `body` must be a module-level function (it is pickled into spawned processes)."""
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(body, world, free_port(), out), nprocs=world, join=True)
    return dict(out)


def _rank(rank: int, body: Callable[[int], Any], world: int, port: int, out: dict[int, Any]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out[rank] = body(rank)
    finally:
        dist.destroy_process_group()
