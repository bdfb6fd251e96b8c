"""Two gloo processes: the collective decisions (stop, save, which checkpoint) agree on every rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from processes import free_port

WORKER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import torch, torch.distributed as dist
    from dtrain.checkpoint import (CheckpointManager, PreemptionHandler, SavePolicy, gather_rng_states,
                                   restore_rank_rng_state)
    from dtrain.config import CheckpointConfig

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = {}

    torch.manual_seed(100 + rank)
    states = gather_rng_states()
    expected = torch.rand(3)
    torch.manual_seed(0)
    restore_rank_rng_state(states, rank=rank, world_size=world, seed=0, step=0)
    out["rng_entries"] = len(states)
    out["rng_restored"] = torch.equal(torch.rand(3), expected)

    handler = PreemptionHandler()
    handler.received = 15 if rank == 1 else None  # only rank 1 got SIGTERM so far
    out["stop"] = handler.any_rank_requested()

    # Clocks disagree: rank 0's decides for all, through the loop's step-sync all_reduce.
    from dtrain.distributed.context import DistContext
    from dtrain.engine.step_sync import StepSync
    policy = SavePolicy(CheckpointConfig(every_iters=0, every_minutes=1.0), clock=lambda: 0.0)
    sync = StepSync(DistContext(rank=rank, world_size=world), every=2)
    decisions = []
    for clock_now in ((0.0, 1000.0), (1000.0, 0.0)):  # (rank 0's clock, rank 1's clock)
        sync.record(1, torch.tensor(1.0), torch.tensor(0.0))
        decisions.append(sync.sync(preempt=False, save_time=policy.time_due(now=clock_now[rank])).save_time)
    out["save_decisions"] = decisions

    directory = Path(sys.argv[1])
    manager = CheckpointManager(directory, keep_last=3, keep_best=False, rank=rank)
    for step in (10, 20):
        manager.save({"step": step}, step)
    dist.barrier()
    if rank == 0:
        (directory / "ckpt-000000020.pt").write_bytes(b"truncated")
    dist.barrier()
    state, path = manager.load_latest()
    out["resumed_step"] = state["step"]
    Path(sys.argv[2] + f".{rank}").write_text(json.dumps(out))
    dist.destroy_process_group()
    """
)


@pytest.mark.distributed
def test_two_ranks_agree(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env_base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, str(script), str(tmp_path / "ckpts"), str(tmp_path / "out")],
                         env={**env_base, "RANK": str(rank)}, stderr=subprocess.PIPE)
        for rank in range(2)
    ]
    errors = [proc.communicate(timeout=180)[1].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(e[-2000:] for e in errors)
    results = [json.loads((tmp_path / f"out.{rank}").read_text()) for rank in range(2)]
    for result in results:
        assert result["rng_entries"] == 2 and result["rng_restored"]
        assert result["stop"] is True
        assert result["save_decisions"] == [False, True]  # rank 0's clock, at the agreed step 2
        assert result["resumed_step"] == 10  # both skip the corrupt newest one
