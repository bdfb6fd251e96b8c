"""distributed.bn_group_size: BN statistics over exactly that many samples, on any world size.

The expected output is computed directly: the global batch cut into consecutive groups of
bn_group_size samples, each normalised with its own statistics. 1 process (ghost batches),
2 processes (one sync group; and ghost batches inside each process), 4 processes (two sync groups).
"""

from __future__ import annotations

import functools

import pytest
import torch
from gloo_processes import run_on_gloo
from torch import nn

from dtrain.config import DistributedConfig
from dtrain.distributed.context import DistContext
from dtrain.distributed.sync_bn import GroupBatchNorm
from dtrain.distributed.wrap import apply_sync_bn

CHANNELS = 3
WEIGHT, BIAS = torch.tensor([0.5, 1.5, -2.0]), torch.tensor([0.1, -0.2, 0.3])


def _global_batch(samples: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(samples, CHANNELS, 4, 4, generator=gen) * 3 + 1.5


def _direct(x: torch.Tensor, group: int) -> torch.Tensor:
    """BN over each consecutive `group` samples, computed by hand."""
    outs = []
    for chunk in x.split(group):
        mean = chunk.mean(dim=(0, 2, 3), keepdim=True)
        var = chunk.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        outs.append((chunk - mean) / torch.sqrt(var + 1e-5) * WEIGHT.view(1, -1, 1, 1) + BIAS.view(1, -1, 1, 1))
    return torch.cat(outs)


def _group_bn(group: int) -> nn.Module:
    bn = nn.BatchNorm2d(CHANNELS)
    with torch.no_grad():
        bn.weight.copy_(WEIGHT)
        bn.bias.copy_(BIAS)
    model = apply_sync_bn(nn.Sequential(bn), DistributedConfig(bn_group_size=group), DistContext())
    assert isinstance(model[0], GroupBatchNorm)
    return model


def test_one_process_ghost_batches_of_32():
    x = _global_batch(96)
    model = _group_bn(32)
    assert torch.allclose(model(x), _direct(x, 32), atol=1e-5)
    # one running-stat update per step, from the mean of the groups' statistics
    chunks = x.split(32)
    mean = torch.stack([c.mean(dim=(0, 2, 3)) for c in chunks]).mean(0)
    assert torch.allclose(model[0].running_mean, 0.1 * mean, atol=1e-5)
    assert int(model[0].num_batches_tracked) == 1


def test_batch_equal_to_the_group_is_plain_batch_norm():
    x = _global_batch(32)
    reference = nn.BatchNorm2d(CHANNELS)
    with torch.no_grad():
        reference.weight.copy_(WEIGHT)
        reference.bias.copy_(BIAS)
    model = _group_bn(32)
    assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert torch.allclose(model[0].running_var, reference.running_var, atol=1e-5)
    model.eval(), reference.eval()
    assert torch.allclose(model(x), reference(x), atol=1e-5)


def _worker(world: int, per_rank: int, group: int, rank: int) -> dict:
    x = _global_batch(world * per_rank)[rank * per_rank:(rank + 1) * per_rank].clone().requires_grad_(True)
    model = _group_bn(group)
    y = model(x)
    y.sum().backward()
    return {"y": y.detach(), "rm": model[0].running_mean.clone()}


@pytest.mark.parametrize("world,per_rank,group", [
    pytest.param(2, 16, 32, id="2proc-sync-group-of-32"),
    pytest.param(2, 64, 32, id="2proc-ghost-32", marks=pytest.mark.slow),
    pytest.param(4, 8, 16, id="4proc-two-sync-groups", marks=pytest.mark.slow),
])
def test_processes_see_the_statistics_of_their_group(world, per_rank, group):
    out = run_on_gloo(functools.partial(_worker, world, per_rank, group), world)
    x = _global_batch(world * per_rank)
    expected = _direct(x, group)
    for rank in range(world):
        assert torch.allclose(out[rank]["y"], expected[rank * per_rank:(rank + 1) * per_rank], atol=1e-4), rank
    if per_rank < group:  # every rank of a sync group holds the same running statistics
        assert torch.allclose(out[0]["rm"], out[1]["rm"])
        mean = x[:group].mean(dim=(0, 2, 3))
        assert torch.allclose(out[0]["rm"], 0.1 * mean, atol=1e-5)


def test_negative_group_size_is_one_line_naming_the_key():
    from dtrain.errors import ConfigError

    with pytest.raises(ConfigError, match="distributed.bn_group_size must be positive"):
        apply_sync_bn(nn.Sequential(nn.BatchNorm2d(3)), DistributedConfig(bn_group_size=-4), DistContext())
