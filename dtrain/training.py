"""Train a resolved config in this process: one rank of the job torchrun started, or alone.

    run_recipe(recipe, overrides)   resolve (one line for a bad config) and train; the exit code
    train_config(cfg)               join the process group, preflight, train, print the summary

`python -m dtrain.train` (dtrain/train.py), `dtrain train` and `dtrain demo` run through here.
Exit codes: 0 done (or preempted after a checkpoint), 1 a failure (traceback printed once, by the
rank that failed), 2 a user error (one line).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dtrain.builders import build_trainer
from dtrain.checkpoint.fingerprint import check_resume
from dtrain.checkpoint.rng import reseed_all
from dtrain.checkpoint.run_lock import lock_run_dir, usable_directory
from dtrain.config import RunConfig
from dtrain.distributed.context import DistContext, env_rank, init_distributed, teardown
from dtrain.distributed.failure import EXIT_USER_ERROR, SymmetricError, exit_code_for, run_rank, user_error_line
from dtrain.engine.loop import TrainResult
from dtrain.errors import DtrainError
from dtrain.resolve import Placement, check_data_root, load_config, place
from dtrain.tracking import keep_output_without_reader, prefix_rank_output, resolve_uri


@dataclass
class Outcome:
    exit_code: int
    result: TrainResult | None


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """train.deterministic: bitwise repeatable kernels (slower), the basis of exact resume tests."""
    if not enabled:
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)


def preflight(cfg: RunConfig, ctx: DistContext) -> RunConfig:
    """`cfg` placed where this process runs (the resolver's device defaults, validation and
    world-size check), after the checks that can fail differently per node (a data root missing
    on one), made symmetric: every rank checks, the verdicts are gathered, and every rank raises
    rank 0's view of the first failure, so the message is printed once and no rank is left waiting."""
    problem = None
    try:
        cfg = place(cfg, Placement(ctx.device.type, (ctx.world_size,)))  # `auto` amp / channels_last / loader
        check_data_root(cfg)
        if ctx.is_main:
            lock_run_dir(cfg.resolved_run_dir())  # one run per run_dir; teardown() releases it
            usable_directory(cfg.resolved_checkpoint_dir(), "checkpoint.dir")  # only rank 0 writes there
        check_resume(cfg, ctx.rank)  # settings differing from the run directory's refuse an auto-resume
    except DtrainError as exc:
        problem = str(exc)
    verdicts = ctx.all_gather_object(problem)
    failed = [(rank, text) for rank, text in enumerate(verdicts) if text]
    if failed:
        rank, text = failed[0]
        everywhere = len(failed) == len(verdicts) and all(t == text for _, t in failed)
        where = "" if everywhere or not ctx.is_distributed else f" (on rank {rank})"
        raise SymmetricError(f"{text}{where}")
    return cfg


def train_config(cfg: RunConfig, *, stream=None) -> Outcome:
    """Train `cfg` in this process (one rank of the job torchrun started, or alone)."""
    ctx = init_distributed(cfg.distributed, cfg.train.device)
    prefix_rank_output(ctx.rank)  # "[rank N] " before every line ranks other than 0 print
    result: TrainResult | None = None

    def body() -> int:
        nonlocal result
        placed = preflight(cfg, ctx)
        set_deterministic(placed.train.deterministic, ctx.device)
        if ctx.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ and ctx.is_distributed:
            # N processes on one machine would each take every core and thrash.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        reseed_all(placed.train.seed)  # the same seed on every rank: identical model initialisation
        result = build_trainer(placed, ctx, placed.optim.per_process_batch(ctx.world_size), stream=stream).run()
        if ctx.is_main:
            print_summary(placed, result, stream or sys.stdout)
        return result.exit_code

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
    if final is not None and result.stopped != "preempted":  # a preempted run's last evaluation is stale
        lines.append(f"validation: top-1 error {final.top1_err:.2f}% (accuracy {100 - final.top1_err:.2f}%), "
                     f"top-5 error {final.top5_err:.2f}% on {final.samples} images ({cfg.eval.mode})")
    lines.append(f"run dir: {result.run_dir}")
    if result.last_checkpoint:
        lines.append(f"checkpoint: {result.last_checkpoint}")
    if result.stopped == "preempted":
        lines.append(f"to resume: run the same command again (checkpoint.resume=auto continues from "
                     f"{result.last_checkpoint or result.run_dir})")
    if cfg.tracking.backend == "mlflow":
        lines.append(f"MLflow run {result.run_id}: {result.run_link or mlflow_ui_command(cfg)}" if result.run_id else
                     f"MLflow: not reached; metrics are in {result.run_dir / 'metrics.jsonl'} "
                     f"(send them with: dtrain mlflow-sync {result.run_dir})")
    print("\n".join(lines), file=stream, flush=True)


def run_recipe(recipe: str, overrides: Sequence[str], *, check_only: bool = False) -> int:
    """Resolve RECIPE plus overrides and train it here; the exit code. `check_only`: resolve and
    validate, train nothing (what the launchers run before torchrun, which would turn a typo into
    a worker traceback and retry it --max-restarts times)."""
    keep_output_without_reader()  # a `| tee` that died with Ctrl-C must not cost the checkpoint
    try:
        cfg = load_config(recipe, overrides)
    except DtrainError as exc:
        if check_only or env_rank() == 0:  # the same argv on every rank: say it once (a check runs per node)
            print(user_error_line(exc), file=sys.stderr)
        return EXIT_USER_ERROR
    if check_only:
        return 0
    try:
        return train_config(cfg).exit_code
    except DtrainError as exc:  # before the process group exists (device, backend, joining it)
        if env_rank() == 0 or exit_code_for(exc) != EXIT_USER_ERROR:  # a join failure is per rank
            print(user_error_line(exc), file=sys.stderr)
        return exit_code_for(exc)
