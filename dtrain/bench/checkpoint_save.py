"""`dtrain bench checkpoint`: how long training is blocked per checkpoint save.

The state is what `dtrain train` saves for a model: weights and BN buffers, SGD momentum (one
buffer per parameter), train state, RNG, composed by the CheckpointManager from registered
parts exactly as the loop does. `blocked` is the time save_parts() keeps the training thread
(the state is copied to the CPU); `written` is the time until the file, its sidecar and best/
retention are on disk (the background writer finished). The blocked time is what a save costs
training; the written time only bounds how often one can be taken.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from dtrain import models
from dtrain.bench.timing import Measurement
from dtrain.checkpoint import CheckpointManager
from dtrain.engine.state import Position, RngPart


def _model_and_optimizer(name: str, device: torch.device):
    torch.manual_seed(0)
    model = models.build(name).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for parameter in model.parameters():  # momentum as after a real step, without paying for one
        optimizer.state[parameter]["momentum_buffer"] = torch.zeros_like(parameter)
    return model, optimizer


def bench_checkpoint(name: str, device: torch.device, saves: int) -> Measurement:
    model, optimizer = _model_and_optimizer(name, device)
    blocked, written = [], []
    with tempfile.TemporaryDirectory() as directory:
        manager = CheckpointManager(directory, keep_last=2)
        position = Position()
        manager.register({"model": model, "optimizer": optimizer, "train_state": position,
                          "rng": RngPart(rank=0, world_size=1, seed=0, position=position)})
        for step in range(1, saves + 1):
            position.step = step
            started = time.perf_counter()
            manager.save_parts(step)
            blocked.append(time.perf_counter() - started)
            manager.wait()
            written.append(time.perf_counter() - started)
        size = manager.checkpoints()[-1][1].stat().st_size
    return Measurement(f"checkpoint:{name}", 0.0, [], 0, saves, {
        "blocked_s_median": round(statistics.median(blocked), 4), "blocked_s_max": round(max(blocked), 4),
        "written_s_median": round(statistics.median(written), 3), "megabytes": round(size / 1e6, 1),
        "device": str(device)})
