"""Apply distribution to a model from outside: sync BN, then torch's DistributedDataParallel.

A model never knows it is distributed; `wrap` returns what the ddp engine (dtrain/engine/ddp.py)
steps. The engines themselves are chosen from one registry, dtrain.engine.engine.ENGINES; the
DeepSpeed engine uses `apply_sync_bn` only and lets DeepSpeed do the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from dtrain.config import DistributedConfig
from dtrain.distributed.context import DistContext
from dtrain.distributed.sync_bn import convert_sync_batchnorm, convert_to_group_bn
from dtrain.errors import ConfigError

# A DDP communication hook: (state, gradient bucket) -> the future of the reduced bucket.
CommHook = Callable[[Any, dist.GradBucket], torch.futures.Future[torch.Tensor]]

# distributed.grad_compression -> torch's DDP communication hook (None: DDP's own fp32 all-reduce).
# A hook casts each gradient bucket to 16 bits, divides it by the world size, all-reduces
# it and casts the sum back: half the bytes on the wire, gradients rounded to 16 bits.
GRAD_COMPRESSION_HOOKS: dict[str, CommHook | None] = {
    "none": None,
    "fp16": default_hooks.fp16_compress_hook,
    "bf16": default_hooks.bf16_compress_hook,
}
# DDP.register_comm_hook refuses bf16_compress_hook without CUDA and NCCL (gloo on CPU would
# all-reduce bf16, but torch checks the hook's name first); fp16 runs on gloo.
NEEDS_CUDA = {"bf16"}


def grad_compression_hook(dist_cfg: DistributedConfig, ctx: DistContext) -> CommHook | None:
    """The hook of distributed.grad_compression, refused in one line where DDP cannot run it."""
    name = dist_cfg.grad_compression
    if name in NEEDS_CUDA and ctx.device.type != "cuda":
        raise ConfigError(f"distributed.grad_compression={name} needs NCCL (a CUDA device): torch's DDP refuses "
                          f"its {name} hook on CPU; on CPU use distributed.grad_compression=fp16")
    return GRAD_COMPRESSION_HOOKS[name]


def _wrap_ddp(model: nn.Module, dist_cfg: DistributedConfig, ctx: DistContext) -> nn.Module:
    hook = grad_compression_hook(dist_cfg, ctx)  # checked on one process too: the recipe fails here, not at scale
    if not ctx.is_distributed:
        return model  # one process: nothing to synchronise
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # DDP broadcasts rank 0's parameters and buffers at construction: every rank starts equal.
    # find_unused_parameters (default true) also stops DDP's one-time re-bucketing after the first
    # step: with 3+ processes a ring all-reduce sums each element in an order set by its place in
    # the bucket, so a resumed process (first step: initial layout) and the uninterrupted one
    # (rebuilt layout) would differ in the last bit. The cluster lab found this at 4 hosts.
    ddp = DistributedDataParallel(model, device_ids=device_ids,
                                  find_unused_parameters=dist_cfg.find_unused_parameters)
    if hook is not None:
        ddp.register_comm_hook(state=None, hook=hook)  # state None: the default process group
    return ddp


def apply_sync_bn(model: nn.Module, dist_cfg: DistributedConfig, ctx: DistContext) -> nn.Module:
    """BN over bn_group_size samples if set (any world size); else over the global batch when asked
    for and there is more than one process."""
    if dist_cfg.bn_group_size:
        return convert_to_group_bn(model, dist_cfg.bn_group_size)
    if dist_cfg.sync_bn and ctx.is_distributed:
        return convert_sync_batchnorm(model, ctx.device)
    return model


def wrap(model: nn.Module, dist_cfg: DistributedConfig, ctx: DistContext) -> nn.Module:
    """Sync BN (if asked) + DDP (with more than one process); the model must already be on ctx.device."""
    return _wrap_ddp(apply_sync_bn(model, dist_cfg, ctx), dist_cfg, ctx)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP (for eval and state_dict keys without 'module.')."""
    if isinstance(model, DistributedDataParallel):
        bare: nn.Module = model.module
        return bare
    return model
