"""optim.grad_accum with the ddp engine on 2 gloo processes: the micro-batches before the step's
boundary only accumulate each rank's own gradients (DDP's no_sync, chosen by the boundary the
loop passes to Engine.forward), the boundary micro-batch all-reduces them, and the step's
gradient is that of the mean loss over every rank's micro-batches, as one big batch gives it."""

from __future__ import annotations

import pytest
import torch
from gloo_processes import run_on_gloo
from torch.nn import functional as F

from dtrain import models
from dtrain.distributed.context import DistContext
from dtrain.engine.ddp import DDPEngine
from dtrain.resolve import load_config

WORLD, ACCUM, MICRO_BATCH = 2, 2, 4


def _micro_batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(100 + rank)  # every rank its own data
    return [(torch.randn(MICRO_BATCH, 3, 16, 16, generator=gen), torch.randint(0, 10, (MICRO_BATCH,), generator=gen))
            for _ in range(ACCUM)]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.build("resnet20", num_classes=10)


def _flat_grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _gradients_after_each_micro_batch(rank: int) -> list[torch.Tensor]:
    cfg = load_config("digits_resnet20", [f"optim.grad_accum={ACCUM}", "distributed.sync_bn=false"])
    engine = DDPEngine(cfg, DistContext(rank=rank, world_size=WORLD, backend="gloo"), _model())
    after_each = []
    for index, (images, labels) in enumerate(_micro_batches(rank)):
        boundary = index == ACCUM - 1
        loss = F.cross_entropy(engine.forward(images, boundary=boundary), labels)
        engine.backward(loss, boundary=boundary)
        after_each.append(_flat_grads(engine.model).clone())
    return after_each


@pytest.fixture(scope="module")
def gradients() -> dict:
    return run_on_gloo(_gradients_after_each_micro_batch, WORLD)


def test_micro_batches_before_the_boundary_are_not_all_reduced(gradients: dict) -> None:
    assert not torch.allclose(gradients[0][0], gradients[1][0])  # each rank's own gradient so far


def test_the_boundary_gives_every_rank_the_gradient_of_the_whole_step(gradients: dict) -> None:
    torch.testing.assert_close(gradients[0][-1], gradients[1][-1], rtol=0, atol=0)
    reference = _model()
    for rank in range(WORLD):
        for images, labels in _micro_batches(rank):
            (F.cross_entropy(reference(images), labels) / (WORLD * ACCUM)).backward()
    torch.testing.assert_close(gradients[0][-1], _flat_grads(reference), rtol=1e-5, atol=1e-7)
