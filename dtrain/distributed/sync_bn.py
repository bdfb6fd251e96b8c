"""Batch normalisation over the whole global batch, on CUDA (torch's) and on CPU/gloo (ours).

`torch.nn.SyncBatchNorm` refuses modules on the CPU, so CPU runs (gloo) get `GlooSyncBatchNorm`,
written by hand because torch lacks it: its training forward all-reduces the per-channel
(sum, sum of squares, count) of every rank, normalises with the global statistics, and its
backward all-reduces the two per-channel gradient sums, exactly as torch's SyncBatchNorm does
on CUDA. It subclasses `_BatchNorm`, so its parameters, buffers and state_dict keys are those of
`nn.BatchNorm2d`: a checkpoint loads into either.

`GroupBatchNorm` (distributed.bn_group_size) takes BN statistics over a fixed number of samples,
as the papers did (R2: 32 images per GPU): sub-group sync BN below it, ghost batches above it.

Gradient convention (the same as torch's): the input gradient is that of the SUM of the ranks'
losses; weight and bias gradients are local, and DDP's gradient averaging turns both into the
gradient of the mean loss over the global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from dtrain.errors import ConfigError


def _reduce_dims(x: torch.Tensor) -> list[int]:
    return [0] + list(range(2, x.dim()))


def _per_channel(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view([1, -1] + [1] * (like.dim() - 2))


class _GlobalBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None, eps: float,
                momentum: float | None, group: dist.ProcessGroup | None) -> torch.Tensor:
        dims = _reduce_dims(x)
        # Statistics in float64: sum/sum-of-squares cancel badly in fp32 on large batches.
        xd = x.detach().double()
        local = torch.cat([
            xd.sum(dims),
            (xd * xd).sum(dims),
            torch.tensor([x.numel() / x.size(1)], dtype=torch.float64, device=x.device),
        ])
        dist.all_reduce(local, group=group)
        channels = x.size(1)
        total_sum, total_sq, count = local[:channels], local[channels:2 * channels], local[-1]
        mean = total_sum / count
        var = (total_sq / count - mean * mean).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None and running_var is not None and momentum is not None:
            with torch.no_grad():
                unbiased = var * count / max(count.item() - 1, 1)
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        mean_f, invstd_f = mean.to(x.dtype), invstd.to(x.dtype)
        x_hat = (x - _per_channel(mean_f, x)) * _per_channel(invstd_f, x)
        out = x_hat
        if weight is not None and bias is not None:  # affine: both or neither
            out = out * _per_channel(weight, x) + _per_channel(bias, x)
        ctx.save_for_backward(x_hat, weight, invstd_f)
        ctx.count = count.item()
        ctx.group = group
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_hat, weight, invstd = ctx.saved_tensors
        dims = _reduce_dims(grad_out)
        sum_dy = grad_out.sum(dims)
        sum_dy_xhat = (grad_out * x_hat).sum(dims)
        grad_weight = sum_dy_xhat if weight is not None else None
        grad_bias = sum_dy if weight is not None else None
        both = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(both, group=ctx.group)
        channels = grad_out.size(1)
        mean_dy = both[:channels] / ctx.count
        mean_dy_xhat = both[channels:] / ctx.count
        scale = invstd if weight is None else invstd * weight
        grad_in = _per_channel(scale, grad_out) * (
            grad_out - _per_channel(mean_dy, grad_out) - x_hat * _per_channel(mean_dy_xhat, grad_out)
        )
        return grad_in, grad_weight, grad_bias, None, None, None, None, None


def _global_batch_norm(x: torch.Tensor, bn: _BatchNorm, momentum: float,
                       group: dist.ProcessGroup | None) -> torch.Tensor:
    """`bn`'s training forward with statistics over every rank of `group` (None: all ranks)."""
    running = bn.track_running_stats
    # torch.autograd.Function.apply has no type hints.
    out: torch.Tensor = _GlobalBatchNormFunction.apply(  # type: ignore[no-untyped-call]
        x, bn.weight, bn.bias, bn.running_mean if running else None, bn.running_var if running else None,
        bn.eps, momentum, group)
    return out


class GlooSyncBatchNorm(_BatchNorm):
    """Sync BN for CPU/gloo (any backend works; CUDA runs use torch's kernels instead)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: dist.ProcessGroup | None = None,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        distributed = dist.is_available() and dist.is_initialized() and \
            dist.get_world_size(self.process_group) > 1
        if not (self.training and distributed):
            return super().forward(x)  # eval, or a single process: plain BN
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as _BatchNorm does
                momentum = 1.0 / float(self.num_batches_tracked)
        return _global_batch_norm(x, self, momentum, self.process_group)


def _replace_batchnorm(module: nn.Module, kind: type[_BatchNorm],
                       make: Callable[[_BatchNorm], _BatchNorm]) -> nn.Module:
    """Replace every BatchNorm layer that is not yet `kind` by make(layer), keeping its parameters
    and buffers (the same tensors, so state_dict keys and values stay those of nn.BatchNorm2d)."""
    converted = module
    if isinstance(module, _BatchNorm) and not isinstance(module, kind):
        bn = make(module)
        if module.affine:
            with torch.no_grad():
                bn.weight = module.weight
                bn.bias = module.bias
        bn.running_mean = module.running_mean
        bn.running_var = module.running_var
        bn.num_batches_tracked = module.num_batches_tracked
        converted = bn.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, _replace_batchnorm(child, kind, make))
    return converted


def convert_to_gloo_sync_bn(module: nn.Module, process_group: dist.ProcessGroup | None = None) -> nn.Module:
    """Replace every BatchNorm layer by GlooSyncBatchNorm, keeping parameters and buffers."""
    return _replace_batchnorm(module, GlooSyncBatchNorm, lambda bn: GlooSyncBatchNorm(
        bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, process_group))


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on CUDA (fast kernels), ours everywhere else."""
    if device.type == "cuda":
        # torch's SyncBatchNorm.convert_sync_batchnorm has no type hints.
        converted: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
        return converted
    return convert_to_gloo_sync_bn(model)


# ---- BN over a fixed number of samples: distributed.bn_group_size ------------------------------

# (id of the world group, ranks per group) -> this rank's group
_SUBGROUPS: dict[tuple[int, int], dist.ProcessGroup] = {}


def _subgroup(ranks_per_group: int) -> dist.ProcessGroup:
    """This rank's group of `ranks_per_group` consecutive ranks; created on first use by every rank
    at once (all ranks reach the same BN layer with the same batch size)."""
    key = (id(dist.group.WORLD), ranks_per_group)
    if key not in _SUBGROUPS:
        world = dist.get_world_size()
        if world % ranks_per_group:
            raise ConfigError(f"distributed.bn_group_size needs groups of {ranks_per_group} processes, but the "
                              f"world size {world} does not divide by {ranks_per_group}; change bn_group_size "
                              "or the number of processes")
        # torch.distributed.new_subgroups has no type hints: (this rank's group, all groups).
        _SUBGROUPS[key] = dist.new_subgroups(group_size=ranks_per_group)[0]  # type: ignore[no-untyped-call]
    return _SUBGROUPS[key]


class GroupBatchNorm(_BatchNorm):
    """BN whose training statistics are taken over `group_size` samples, whatever the per-process batch:

    - per-process batch == group_size: plain BN (R2: 32 images per GPU, 8 GPUs);
    - smaller: sync BN over a sub-group of group_size / batch consecutive processes;
    - larger: ghost-batch BN, statistics of each consecutive chunk of group_size samples.

    Running statistics take one update per step from the mean of the groups' mean and unbiased
    variance, so their momentum means what it means for nn.BatchNorm2d. Eval uses them as plain BN does;
    parameters, buffers and state_dict keys are nn.BatchNorm2d's."""

    def __init__(self, num_features: int, group_size: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        if group_size < 1:
            raise ConfigError(f"distributed.bn_group_size must be positive (0 turns it off), got {group_size}")
        self.group_size = group_size

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _momentum(self) -> float:
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training:
            return super().forward(x)
        batch = x.size(0)
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        ranks_per_group = min(max(1, self.group_size // batch), world)
        if batch < self.group_size and ranks_per_group > 1:
            return _global_batch_norm(x, self, self._momentum(), _subgroup(ranks_per_group))
        return self._ghost(x)

    def _ghost(self, x: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(x, self.group_size)
        out = torch.cat([F.batch_norm(c, None, None, self.weight, self.bias, True, 0.0, self.eps) for c in chunks])
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            momentum = self._momentum()
            with torch.no_grad():
                dims = _reduce_dims(x)
                means = torch.stack([c.mean(dims) for c in chunks]).mean(0)
                variances = torch.stack([c.var(dims, unbiased=c.numel() > c.size(1)) for c in chunks]).mean(0)
                self.running_mean.mul_(1 - momentum).add_(means.to(self.running_mean.dtype), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(variances.to(self.running_var.dtype), alpha=momentum)
        return out

    def extra_repr(self) -> str:
        base: str = super().extra_repr()  # type: ignore[no-untyped-call]  # torch's _NormBase.extra_repr: no hints
        return base + f", group_size={self.group_size}"


def convert_to_group_bn(module: nn.Module, group_size: int) -> nn.Module:
    """Replace every BatchNorm layer by GroupBatchNorm(group_size), keeping parameters and buffers."""
    return _replace_batchnorm(module, GroupBatchNorm, lambda bn: GroupBatchNorm(
        bn.num_features, group_size, bn.eps, bn.momentum, bn.affine, bn.track_running_stats))
