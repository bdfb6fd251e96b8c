"""The loop's step sync on 2 gloo processes: between sync points a training step makes no
collective and no host sync of dtrain's own; at a sync point exactly one all_reduce and one
device->host read; every rank gets the same numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from processes import free_port

SYNC_EVERY, STEPS = 4, 12

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch, torch.distributed as dist
    from dtrain import builders
    from dtrain.resolve import load_config
    from dtrain.distributed.context import init_distributed
    from dtrain.engine import step_sync

    run_dir, out, engine, sync_every, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    cfg = load_config("digits_resnet20", [
        "data.loader=synthetic", "data.synthetic_samples=64", "data.synthetic_image_size=16", "data.crop_size=16",
        "data.val_resize=16", "data.val_crop=16", "data.workers=0", "optim.batch_size=8", "eval.batch_size=16",
        "tracking.backend=none", "train.device=cpu", f"train.sync_every={sync_every}", f"schedule.max_iters={steps}",
        "checkpoint.every_iters=0", "checkpoint.every_minutes=0", "checkpoint.at_epoch_end=false",
        "eval.every_epochs=0", f"distributed.engine={engine}", f"run_dir={run_dir}",
        # R1's warm-up criterion, decided at sync points (threshold 100%: the first sync point almost surely)
        "schedule.warmup=constant", "schedule.warmup_iters=10", "schedule.warmup_until_err=100"])
    ctx = init_distributed(cfg.distributed, "cpu")
    counting = {"on": True, "all_reduce": 0, "host": 0}

    real_all_reduce = dist.all_reduce
    def all_reduce(*args, **kwargs):
        counting["all_reduce"] += counting["on"]
        return real_all_reduce(*args, **kwargs)
    dist.all_reduce = all_reduce
    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__"):
        real = getattr(torch.Tensor, name)
        def wrapper(self, *args, _real=real, **kwargs):
            counting["host"] += counting["on"]
            return _real(self, *args, **kwargs)
        setattr(torch.Tensor, name, wrapper)

    class Paused:  # the loader's own work (sampler indices, batch assembly) is not the step's
        def __init__(self, loader):
            self.loader = loader
        def __len__(self):
            return len(self.loader)
        def set_epoch(self, *args, **kwargs):
            counting["on"] = False
            self.loader.set_epoch(*args, **kwargs)
            counting["on"] = True
        def __iter__(self):
            counting["on"] = False
            iterator = iter(self.loader)
            while True:
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                counting["on"] = True
                yield batch
                counting["on"] = False
            counting["on"] = True

    per_step, synced = [], []
    real_record, real_sync = step_sync.StepSync.record, step_sync.StepSync.sync
    def record(self, step, loss, err):
        real_record(self, step, loss, err)
        per_step.append({"step": step, "all_reduce": counting["all_reduce"], "host": counting["host"],
                         "collectives": self.collectives, "host_syncs": self.host_syncs})
        counting["all_reduce"] = counting["host"] = 0
    def sync(self, **kwargs):
        result = real_sync(self, **kwargs)
        synced.append([result.steps, result.losses, result.top1_errs])
        return result
    step_sync.StepSync.record, step_sync.StepSync.sync = record, sync

    train_loader, eval_loader = builders.build_loaders(cfg, ctx, 4)
    trainer = builders.build_trainer(cfg, ctx, 4, loaders=(Paused(train_loader), eval_loader))
    lrs, real_set_lr = [], trainer.engine.set_lr
    def set_lr(lr):
        lrs.append(lr)
        real_set_lr(lr)
    trainer.engine.set_lr = set_lr
    result = trainer.run()
    with open(out + f".{ctx.rank}", "w") as f:
        json.dump({"per_step": per_step, "synced": synced, "stopped": result.stopped, "lrs": lrs}, f)
    dist.destroy_process_group()
    """
)


def run_two_ranks(tmp_path: Path, engine: str) -> list[dict]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), str(tmp_path / "out"), engine,
                               str(SYNC_EVERY), str(STEPS)],
                              env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, stderr=subprocess.PIPE)
             for rank in range(2)]
    errors = [proc.communicate(timeout=600)[1].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(e[-3000:] for e in errors)
    return [json.loads((tmp_path / f"out.{rank}").read_text()) for rank in range(2)]


def check_sync_points(ranks: list[dict], *, whole_step_counted: bool) -> None:
    for rank in ranks:
        assert rank["stopped"] == "finished"
        steps = rank["per_step"]
        assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
        for before, now in zip(steps, steps[1:], strict=False):
            # Counted from the record of step k-1 to that of step k: the sync point after step
            # k-1 (if it was one) and all of step k.
            synced_after_previous = int(before["step"] % SYNC_EVERY == 0)
            assert now["collectives"] - before["collectives"] == synced_after_previous
            assert now["host_syncs"] - before["host_syncs"] == synced_after_previous
            if whole_step_counted:  # nothing else in the step either (DDP reduces gradients in C++)
                assert now["all_reduce"] == synced_after_previous, now
                assert now["host"] == synced_after_previous, now
    # Identical on all ranks: the same steps, global losses and errors at every sync point.
    assert ranks[0]["synced"] == ranks[1]["synced"]
    assert [s[0] for s in ranks[0]["synced"]] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    # The warm-up criterion costs no host sync (counted above) and every rank leaves the warm-up at
    # the same step: after a sync point (4 or 8) or at the cap (10).
    lrs = ranks[0]["lrs"]
    assert ranks[1]["lrs"] == lrs and len(lrs) == STEPS
    warm = sum(lr == 0.01 for lr in lrs)
    assert warm in (4, 8, 10) and lrs == [0.01] * warm + [0.1] * (STEPS - warm), lrs


@pytest.mark.distributed
def test_steps_between_sync_points_make_no_collective_and_no_host_sync(tmp_path: Path) -> None:
    check_sync_points(run_two_ranks(tmp_path, "ddp"), whole_step_counted=True)


@pytest.mark.slow
@pytest.mark.distributed
def test_the_deepspeed_engine_syncs_at_the_same_points(tmp_path: Path) -> None:
    """DeepSpeed's own ZeRO collectives run inside its step; dtrain's are only the StepSync's."""
    pytest.importorskip("deepspeed", reason="DeepSpeed not installed (pip install 'dtrain[deepspeed]')")
    check_sync_points(run_two_ranks(tmp_path, "deepspeed"), whole_step_counted=False)
