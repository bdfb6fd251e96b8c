"""How much of a data-parallel training step the gradient all-reduce takes over a real link, and
what fp16 gradient compression (distributed.grad_compression=fp16) saves.

Run it under torchrun, one process per host for the ring estimate to describe the link (the
rendezvous comes from torchrun's environment only: no address is written here):

    torchrun --standalone --nproc-per-node 2 benchmarks/allreduce_share.py --link-mbit 1000
    torchrun --nnodes 4 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        --rdzv-id share benchmarks/allreduce_share.py --link-mbit 100 --out share_4x100.json

For each model's gradient (its parameter count from dtrain.models, as fp32 bytes) it times
  (a) a bare all_reduce of that many fp32 elements, split into DDP's default buckets (the first
      1 MiB, then 25 MiB each; DDP cuts at parameter boundaries, this at element counts), all
      launched asynchronously and then waited for, as DDP's reducer does;
  (b) the same with what torch's fp16_compress_hook does per bucket: cast to fp16, divide by the
      world size, all_reduce, copy back into the fp32 bucket;
  (c) a whole training step (forward, backward, SGD step) of the real model at a small per-rank
      batch (random images at the model's native size), wrapped by dtrain's own
      `distributed.wrap` as training does: DDP, DDP with fp16 compression, the first DDP
      model's step inside no_sync() (no all-reduce), and DDP with find_unused_parameters=false
      (what dtrain's default true costs: `find_unused_parameters_cost`, step time ratio - 1).
      The all-reduce share of the step is
      (DDP - no_sync) / DDP: the communication that backward did not hide, plus the wait for the
      slowest rank that only a synchronising step pays (large on a loaded machine).
Beside (a) and (b) it prints the ring all-reduce estimate 2(N-1)/N x bytes / bandwidth for
--link-mbit and the ratio measured / estimate. Every time is the slowest rank's (max over ranks),
the median of --repeats after --warmup untimed runs; the variants of (a)/(b) and of (c) take
turns, so a change of load falls on all alike. On a GPU the same script runs over NCCL.

At 100 Mbit/s one fp32 all-reduce of ResNet-50's 102 MB gradient takes about 8 s on 2 hosts and
12 s on 4 (the ring estimate), and each of the (1 + 3) rounds runs it in (a) and in the DDP step,
plus half of it twice with fp16: about 2 minutes on 2 hosts, 3 on 4. --repeats 1 --warmup 0 (or
--models resnet20) shortens it. On 4 ranks sharing 2 cores keep --batch small.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from dtrain import models
from dtrain.bench.machine import machine_environment, not_quiet_warning
from dtrain.config import DistributedConfig
from dtrain.distributed.context import DistContext, init_distributed, teardown
from dtrain.distributed.wrap import grad_compression_hook, wrap
from dtrain.errors import DtrainError
from dtrain.models.complexity import parameter_count

MIB = 1024 * 1024
FIRST_BUCKET_BYTES = getattr(dist, "_DEFAULT_FIRST_BUCKET_BYTES", MIB)  # DDP's small first bucket
BUCKET_BYTES = 25 * MIB  # DDP's bucket_cap_mb default
FP32_BYTES = 4
COMPRESSED_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
MODELS = {"resnet20": (10, 32), "resnet50": (1000, 224)}  # name -> (classes, native input side)


@dataclass(frozen=True)
class Timing:
    warmup: int
    repeats: int


def bucket_sizes(elements: int) -> list[int]:
    """fp32 element counts of DDP's default buckets for a gradient of `elements` values."""
    sizes, left, cap = [], elements, FIRST_BUCKET_BYTES // FP32_BYTES
    while left > 0:
        sizes.append(min(cap, left))
        left -= sizes[-1]
        cap = BUCKET_BYTES // FP32_BYTES
    return sizes


def slowest_rank_seconds(runs: dict[str, Callable[[], None]], ctx: DistContext,
                         timing: Timing) -> dict[str, list[float]]:
    """Seconds of each timed call of each run, the max over ranks. The runs take turns (a, b, c, a,
    b, c, ...) so that a change in the machine's load falls on all of them alike; every call starts
    after a barrier, so one rank's lag is not charged to the next call."""
    for run in runs.values():
        for _ in range(timing.warmup):
            run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(timing.repeats):
        for name, run in runs.items():
            dist.barrier()
            began = time.perf_counter()
            run()
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)
            seconds[name].append(time.perf_counter() - began)
    slowest = torch.tensor(list(seconds.values()), dtype=torch.float64, device=ctx.device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    return dict(zip(seconds, slowest.tolist(), strict=True))


def allreduce_buckets(buckets: list[torch.Tensor], compressed: torch.dtype | None, world: int) -> None:
    """(a) fp32 buckets all-reduced as they are; (b) as torch's compress hook does it."""
    if compressed is None:
        works = [dist.all_reduce(bucket, async_op=True) for bucket in buckets]
        for work in works:
            work.wait()
        return
    halves = [bucket.to(compressed).div_(world) for bucket in buckets]
    works = [dist.all_reduce(half, async_op=True) for half in halves]
    for bucket, half, work in zip(buckets, halves, works, strict=True):
        work.wait()
        bucket.copy_(half)


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                  labels: torch.Tensor, *, communicate: bool) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with contextlib.nullcontext() if communicate else model.no_sync():
            F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return step


def time_steps(name: str, batch: int, compression: str, ctx: DistContext, timing: Timing) -> dict[str, list[float]]:
    """(c) DDP, DDP with compression and DDP without the all-reduce (no_sync), same model and data."""
    classes, side = MODELS[name]
    gen = torch.Generator().manual_seed(ctx.rank)
    images = torch.randn(batch, 3, side, side, generator=gen).to(ctx.device)
    labels = torch.randint(0, classes, (batch,), generator=gen).to(ctx.device)
    steps = {}
    for setting in ("none", compression):
        torch.manual_seed(0)
        model = wrap(models.build(name, num_classes=classes).to(ctx.device),
                     DistributedConfig(grad_compression=setting), ctx)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        steps["ddp" if setting == "none" else f"ddp_{setting}"] = training_step(model, optimizer, images, labels,
                                                                                communicate=True)
        if setting == "none":  # the same DDP model, its all-reduce skipped
            steps["no_allreduce"] = training_step(model, optimizer, images, labels, communicate=False)
    # What dtrain's default distributed.find_unused_parameters=true costs (one autograd-graph walk
    # per step; it also keeps the bucket layout fixed, which bitwise resume needs beyond 2 ranks).
    torch.manual_seed(0)
    model = wrap(models.build(name, num_classes=classes).to(ctx.device),
                 DistributedConfig(find_unused_parameters=False), ctx)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    steps["ddp_no_graph_walk"] = training_step(model, optimizer, images, labels, communicate=True)
    return slowest_rank_seconds(steps, ctx, timing)


def ring_estimate_seconds(payload_bytes: int, world: int, link_mbit: float) -> float:
    """Bandwidth term of a ring all-reduce: every rank sends (and receives) 2(N-1)/N of the data."""
    return 2 * (world - 1) / world * payload_bytes * 8 / (link_mbit * 1e6)


def measure_model(name: str, args: argparse.Namespace, ctx: DistContext) -> dict:
    timing = Timing(args.warmup, args.repeats)
    classes, _ = MODELS[name]
    elements = parameter_count(models.build(name, num_classes=classes))
    sizes = bucket_sizes(elements)
    buckets = [torch.zeros(size, device=ctx.device) for size in sizes]  # zeros: repeated sums stay finite
    compressed = COMPRESSED_DTYPES[args.compression]
    bare = slowest_rank_seconds({"fp32": lambda: allreduce_buckets(buckets, None, ctx.world_size),
                                 args.compression: lambda: allreduce_buckets(buckets, compressed, ctx.world_size)},
                                ctx, timing)
    steps = time_steps(name, args.batch, args.compression, ctx, timing)
    return summarise(name, elements, sizes, bare, steps, args, ctx.world_size)


def summarise(name: str, elements: int, sizes: list[int], bare: dict, steps: dict, args: argparse.Namespace,
              world: int) -> dict:
    median = {key: statistics.median(values) for key, values in {**bare, **steps}.items()}
    fp32_bytes = elements * FP32_BYTES
    estimate = {"fp32": ring_estimate_seconds(fp32_bytes, world, args.link_mbit),
                args.compression: ring_estimate_seconds(fp32_bytes // 2, world, args.link_mbit)}
    compressed_step = f"ddp_{args.compression}"
    return {
        "model": name, "parameters": elements, "gradient_bytes_fp32": fp32_bytes, "buckets": len(sizes),
        "batch_per_rank": args.batch,
        "allreduce_s": {key: median[key] for key in bare},
        "ring_estimate_s": estimate,
        "measured_over_estimate": {key: median[key] / estimate[key] for key in bare},
        "effective_mbit": {key: estimate[key] * args.link_mbit / median[key] for key in bare},
        "step_s": {key: median[key] for key in steps},
        # What backward did not hide (DDP overlaps bucket all-reduces with the rest of backward).
        # Not clamped: a negative share says the step times' noise exceeds the all-reduce.
        "allreduce_share_of_step": {
            "fp32": (median["ddp"] - median["no_allreduce"]) / median["ddp"],
            args.compression: (median[compressed_step] - median["no_allreduce"]) / median[compressed_step]},
        "bare_allreduce_over_step": median["fp32"] / median["ddp"],
        "find_unused_parameters_cost": median["ddp"] / median["ddp_no_graph_walk"] - 1,
        "repeats_s": {**bare, **steps},
    }


def table(results: list[dict], compression: str) -> str:
    c = compression
    lines = [f"{'model':<9} {'grad MB':>8} | {'(a) fp32 ms':>11} {'est ms':>9} {'ratio':>6} | "
             f"{'(b) ' + c + ' ms':>11} {'est ms':>9} {'ratio':>6} | {'step no-AR':>10} {'DDP':>8} {'share':>6} | "
             f"{'DDP ' + c:>8} {'share':>6}"]
    for r in results:
        a, e, q, s, share = (r["allreduce_s"], r["ring_estimate_s"], r["measured_over_estimate"], r["step_s"],
                             r["allreduce_share_of_step"])
        lines.append(f"{r['model']:<9} {r['gradient_bytes_fp32'] / 1e6:>8.1f} | {a['fp32'] * 1e3:>11.1f} "
                     f"{e['fp32'] * 1e3:>9.1f} {q['fp32']:>6.2f} | {a[c] * 1e3:>11.1f} {e[c] * 1e3:>9.1f} "
                     f"{q[c]:>6.2f} | {s['no_allreduce'] * 1e3:>10.1f} {s['ddp'] * 1e3:>8.1f} {share['fp32']:>6.1%} | "
                     f"{s['ddp_' + c] * 1e3:>8.1f} {share[c]:>6.1%}")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--link-mbit", type=float, required=True, help="link bandwidth for the ring estimate")
    parser.add_argument("--models", default="resnet20,resnet50", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--batch", type=int, default=4, help="images per rank in the training step (c)")
    parser.add_argument("--compression", choices=list(COMPRESSED_DTYPES), default="fp16",
                        help="bf16 needs NCCL (a GPU)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before each measurement")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (the median is shown)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here (rank 0)")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    if unknown := [m for m in args.models if m not in MODELS]:
        parser.error(f"--models: {', '.join(unknown)} is not one of {', '.join(MODELS)}")
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or args.link_mbit <= 0:
        parser.error("--batch, --repeats and --link-mbit must be positive, --warmup at least 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    env = machine_environment()  # before this benchmark adds its own load
    ctx = init_distributed(DistributedConfig(timeout_minutes=60), "auto")
    if ctx.world_size < 2:
        teardown(ctx)
        print("run this under torchrun with 2 or more processes (torchrun --standalone --nproc-per-node 2 ...): "
              "one process all-reduces with nobody", file=sys.stderr)
        return 2
    try:
        grad_compression_hook(DistributedConfig(grad_compression=args.compression), ctx)  # before any timing
    except DtrainError as exc:
        teardown(ctx)
        if ctx.rank == 0:
            print(f"--compression {args.compression}: {exc}", file=sys.stderr)
        return 2
    if ctx.device.type == "cpu":
        torch.set_num_threads(1)  # ranks may share few cores (4 ranks on 2 cores must not oversubscribe)
    hosts = ctx.all_gather_object(socket.gethostname())
    try:
        results = [measure_model(name, args, ctx) for name in args.models]
    finally:
        teardown(ctx)
    if ctx.rank != 0:
        return 0
    record = {"benchmark": "allreduce_share", "command": " ".join(sys.argv), "link_mbit": args.link_mbit,
              "world_size": ctx.world_size, "hosts": len(set(hosts)), "backend": ctx.backend,
              "device": str(ctx.device), "torch": torch.__version__, "compression": args.compression,
              "timing": asdict(Timing(args.warmup, args.repeats)), "environment": env, "results": results}
    if warning := not_quiet_warning(env):
        print(warning)
    print(f"{ctx.world_size} ranks on {len(set(hosts))} host(s), {ctx.backend}, link {args.link_mbit:g} Mbit/s "
          f"(estimate: ring 2(N-1)/N x bytes / bandwidth); buckets: 1 MiB then 25 MiB, as DDP's defaults")
    print(table(results, args.compression))
    for r in results:
        print(f"{r['model']}: DDP step {r['step_s']['ddp'] * 1e3:.1f} ms with find_unused_parameters=true (dtrain's "
              f"default), {r['step_s']['ddp_no_graph_walk'] * 1e3:.1f} ms without: "
              f"{r['find_unused_parameters_cost']:+.1%}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
