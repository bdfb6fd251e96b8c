"""CPU sync BN over 2 gloo processes equals full-batch BN: outputs, running stats and gradients."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.distributed as dist
from gloo_processes import run_on_gloo
from torch import nn

from dtrain.distributed.sync_bn import GlooSyncBatchNorm, convert_to_gloo_sync_bn

CHANNELS = 3


def _reference():
    """Full batch of 8 on one BatchNorm2d; the loss is a weighted sum, additive over samples."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, CHANNELS, 5, 5, generator=gen) * 3 + 1.5
    w_out = torch.randn(8, CHANNELS, 5, 5, generator=gen)
    bn = nn.BatchNorm2d(CHANNELS)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.5, -2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return x, w_out, bn


def _worker(world: int, rank: int) -> dict:
    x, w_out, bn = _reference()
    sync = convert_to_gloo_sync_bn(bn)
    assert isinstance(sync, GlooSyncBatchNorm)
    half = x.shape[0] // world
    xs = x[rank * half:(rank + 1) * half].clone().requires_grad_(True)
    y = sync(xs)
    (y * w_out[rank * half:(rank + 1) * half]).sum().backward()
    grads = torch.stack([sync.weight.grad, sync.bias.grad])
    dist.all_reduce(grads)  # what DDP does (as a sum here, to match the sum loss)
    return {"y": y.detach(), "gx": xs.grad, "gwb": grads,
            "rm": sync.running_mean.clone(), "rv": sync.running_var.clone(), "keys": sorted(sync.state_dict())}


def test_cpu_sync_bn_matches_full_batch_bn_over_two_gloo_processes():
    world = 2
    out = run_on_gloo(functools.partial(_worker, world), world)

    x, w_out, bn = _reference()
    x = x.clone().requires_grad_(True)
    y = bn(x)
    (y * w_out).sum().backward()
    half = x.shape[0] // world
    for rank in range(world):
        part = slice(rank * half, (rank + 1) * half)
        torch.testing.assert_close(out[rank]["y"], y.detach()[part], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[rank]["gx"], x.grad[part], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[rank]["gwb"], torch.stack([bn.weight.grad, bn.bias.grad]),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[rank]["rm"], bn.running_mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out[rank]["rv"], bn.running_var, atol=1e-6, rtol=1e-5)
        assert out[rank]["keys"] == sorted(bn.state_dict())


def test_single_process_sync_bn_is_plain_bn_and_loads_its_state_dict():
    x, _, bn = _reference()
    sync = GlooSyncBatchNorm(CHANNELS)
    sync.load_state_dict(bn.state_dict())
    torch.testing.assert_close(sync(x), bn(x))
    sync.eval(), bn.eval()
    torch.testing.assert_close(sync(x), bn(x))


def test_convert_keeps_parameters_and_replaces_nested_bn():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()))
    weight = model[1][0].weight
    converted = convert_to_gloo_sync_bn(model)
    assert isinstance(converted[1][0], GlooSyncBatchNorm)
    assert converted[1][0].weight is weight
    with pytest.raises(ValueError):
        GlooSyncBatchNorm(4)(torch.zeros(4))
