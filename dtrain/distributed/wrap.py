"""Apply distribution to a model from outside: sync BN, then the engine named by distributed.engine.

A model never knows it is distributed; `wrap` returns what the training loop steps. Engines are
a registry so the DeepSpeed engine (a later issue) is one more entry, not an if-chain.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dtrain.config import DistributedConfig
from dtrain.distributed.context import DistContext
from dtrain.distributed.sync_bn import convert_sync_batchnorm, convert_to_group_bn
from dtrain.errors import ConfigError

EngineWrapper = Callable[[nn.Module, DistributedConfig, DistContext], nn.Module]


def _wrap_ddp(model: nn.Module, dist_cfg: DistributedConfig, ctx: DistContext) -> nn.Module:
    if not ctx.is_distributed:
        return model  # one process: nothing to synchronise
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # DDP broadcasts rank 0's parameters and buffers at construction: every rank starts equal.
    # find_unused_parameters (default true) also stops DDP's one-time re-bucketing after the first
    # step: with 3+ processes a ring all-reduce sums each element in an order set by its place in
    # the bucket, so a resumed process (first step: initial layout) and the uninterrupted one
    # (rebuilt layout) would differ in the last bit. The cluster lab found this at 4 hosts.
    return DistributedDataParallel(model, device_ids=device_ids,
                                   find_unused_parameters=dist_cfg.find_unused_parameters)


ENGINES: dict[str, EngineWrapper] = {"ddp": _wrap_ddp}


def apply_sync_bn(model: nn.Module, dist_cfg: DistributedConfig, ctx: DistContext) -> nn.Module:
    """BN over bn_group_size samples if set (any world size); else over the global batch when asked
    for and there is more than one process."""
    if dist_cfg.bn_group_size:
        return convert_to_group_bn(model, dist_cfg.bn_group_size)
    if dist_cfg.sync_bn and ctx.is_distributed:
        return convert_sync_batchnorm(model, ctx.device)
    return model


def wrap(model: nn.Module, dist_cfg: DistributedConfig, ctx: DistContext) -> nn.Module:
    """Sync BN (if asked) + the distribution engine; the model must already be on ctx.device."""
    engine = ENGINES.get(dist_cfg.engine)
    if engine is None:
        raise ConfigError(
            f"distributed.engine={dist_cfg.engine!r} is not available in this version "
            f"(available: {', '.join(sorted(ENGINES))}); use distributed.engine=ddp"
        )
    return engine(apply_sync_bn(model, dist_cfg, ctx), dist_cfg, ctx)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP (for eval and state_dict keys without 'module.')."""
    return model.module if isinstance(model, DistributedDataParallel) else model
