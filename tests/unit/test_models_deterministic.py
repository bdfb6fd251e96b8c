"""The ResNets train under torch.use_deterministic_algorithms(True) (train.deterministic=true, the
exact-resume setting) on every device: global pooling is a mean, because adaptive_avg_pool2d's
CUDA backward has no deterministic kernel and raises there."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dtrain import models
from dtrain.models.resnet import GlobalAvgPool


def test_global_pool_equals_adaptive_average_pooling():
    x = torch.randn(4, 16, 7, 7)
    assert torch.allclose(GlobalAvgPool()(x), nn.AdaptiveAvgPool2d(1)(x), atol=1e-6)
    assert GlobalAvgPool()(x.contiguous(memory_format=torch.channels_last)).shape == (4, 16, 1, 1)


def _one_deterministic_backward(device: str) -> None:
    net = models.build("resnet18", num_classes=10).to(device)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        net(torch.randn(2, 3, 64, 64, device=device)).sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_a_resnet_backward_runs_with_deterministic_algorithms_on_cpu():
    _one_deterministic_backward("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_resnet_backward_runs_with_deterministic_algorithms_on_cuda(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    _one_deterministic_backward("cuda")
