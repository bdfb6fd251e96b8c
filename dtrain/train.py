"""`python -m dtrain.train RECIPE [key=value ...]`: train a recipe on 1 process, N processes or N nodes.

    python -m dtrain.train digits_resnet20 data.root=runs/data/digits
    torchrun --nproc-per-node 2 -m dtrain.train cifar10_resnet110 data.root=/data/cifar10
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m dtrain.train resnet200_preact data.root=/data/imagenet

The same command line on every node; torchrun's environment says who this process is (one plain
process when it is absent). Exit codes: 0 done (or preempted after a checkpoint), 1 a failure
(traceback printed once, by the rank that failed), 2 a user error (one line).
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dtrain.builders import build_trainer
from dtrain.config import RunConfig, check_data_root, check_world_size, load_config
from dtrain.distributed.context import DistContext, env_rank, init_distributed, teardown
from dtrain.distributed.failure import EXIT_USER_ERROR, SymmetricError, run_rank
from dtrain.engine.loop import TrainResult
from dtrain.errors import DtrainError
from dtrain.tracking import resolve_uri

USAGE = "usage: python -m dtrain.train RECIPE [key=value ...]   (e.g. digits_resnet20 optim.lr=0.05)"


@dataclass
class Outcome:
    exit_code: int
    result: TrainResult | None


def seed_everything(seed: int) -> None:
    """The same seed on every rank: identical model initialisation (DDP also broadcasts rank 0's)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """train.deterministic: bitwise repeatable kernels (slower), the basis of exact resume tests."""
    if not enabled:
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)


def preflight(cfg: RunConfig, ctx: DistContext) -> int:
    """Checks that can fail differently per node (a data root missing on one), made symmetric:
    every rank checks, the verdicts are gathered, and every rank raises rank 0's view of the
    first failure, so the message is printed once and no rank is left waiting."""
    problem = None
    per_process = 0
    try:
        per_process = check_world_size(cfg, ctx.world_size)
        check_data_root(cfg)
    except DtrainError as exc:
        problem = str(exc)
    verdicts = ctx.all_gather_object(problem)
    failed = [(rank, text) for rank, text in enumerate(verdicts) if text]
    if failed:
        rank, text = failed[0]
        everywhere = len(failed) == len(verdicts) and all(t == text for _, t in failed)
        where = "" if everywhere or not ctx.is_distributed else f" (on rank {rank})"
        raise SymmetricError(f"{text}{where}")
    return per_process


def train_config(cfg: RunConfig, *, stream=None) -> Outcome:
    """Train `cfg` in this process (one rank of the job torchrun started, or alone)."""
    ctx = init_distributed(cfg.distributed, cfg.train.device)

    def body() -> int:
        nonlocal result
        per_process = preflight(cfg, ctx)
        set_deterministic(cfg.train.deterministic, ctx.device)
        if ctx.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ and ctx.is_distributed:
            # N processes on one machine would each take every core and thrash.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        seed_everything(cfg.train.seed)
        result = build_trainer(cfg, ctx, per_process, stream=stream).run()
        if ctx.is_main:
            print_summary(cfg, result, stream or sys.stdout)
        return result.exit_code

    result: TrainResult | None = None
    code = run_rank(body, ctx.rank, ctx.world_size)
    teardown(ctx)
    return Outcome(exit_code=code, result=result)


def mlflow_ui_command(cfg: RunConfig) -> str:
    uri = resolve_uri(cfg.tracking.uri, cfg.resolved_run_dir())
    if uri.startswith(("http://", "https://")):
        return f"open {uri} (the MLflow server of this run)"
    return f"mlflow ui --backend-store-uri {uri}"


def print_summary(cfg: RunConfig, result: TrainResult, stream) -> None:
    final = result.final
    lines = [f"finished: {result.stopped} at step {result.step} (epoch {result.epoch}) in {result.seconds:.1f} s"]
    if final is not None:
        lines.append(f"validation: top-1 error {final.top1_err:.2f}% (accuracy {100 - final.top1_err:.2f}%), "
                     f"top-5 error {final.top5_err:.2f}% on {final.samples} images ({cfg.eval.mode})")
    lines.append(f"run dir: {result.run_dir}")
    if result.last_checkpoint:
        lines.append(f"checkpoint: {result.last_checkpoint}")
    if cfg.tracking.backend == "mlflow":
        lines.append(f"MLflow run {result.run_id}: {mlflow_ui_command(cfg)}")
    print("\n".join(lines), file=stream, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        return EXIT_USER_ERROR if not args else 0
    recipe, overrides = args[0], args[1:]
    try:
        cfg = load_config(recipe, overrides)
    except DtrainError as exc:
        if env_rank() == 0:  # the same argv on every rank: say it once
            print(f"Error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return train_config(cfg).exit_code
    except DtrainError as exc:  # before the process group exists (device, backend)
        if env_rank() == 0:
            print(f"Error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
