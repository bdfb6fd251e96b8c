"""Weight EMA (dtrain/engine/ema.py): the closed form, the update cadence and warm-up, the
checkpoint part, best_ema.pt, and the ema.* keys' checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dtrain.checkpoint import CheckpointManager
from dtrain.checkpoint.manager import BEST_EMA_NAME, BEST_NAME
from dtrain.config import EmaConfig
from dtrain.engine.ema import WeightEma
from dtrain.errors import ConfigError
from dtrain.resolve import load_config


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def _set_weights(net: nn.Module, value: float) -> None:
    with torch.no_grad():
        for tensor in [*net.parameters(), net[1].running_mean, net[1].running_var]:
            tensor.fill_(value)


@pytest.mark.parametrize("decay, updates", [(0.9, 1), (0.9, 5), (0.5, 3)])
def test_after_k_updates_the_average_is_decay_to_the_k_mixing(decay: float, updates: int) -> None:
    """Weights jump from w0 to w and stay: after k updates, ema = decay^k w0 + (1 - decay^k) w,
    for every parameter and BN statistic (use_buffers)."""
    net = _net()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    ema = WeightEma(net, EmaConfig(enabled=True, decay=decay))
    _set_weights(net, 2.0)
    for _ in range(updates):
        ema.update(epoch=0)
    mix = decay ** updates
    averaged = ema.model.state_dict()
    for key in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        expected = mix * start[key] + (1 - mix) * 2.0
        assert torch.allclose(averaged[key], expected, atol=1e-6), key
    assert not torch.equal(averaged["0.weight"], net.state_dict()["0.weight"])


def test_changing_weights_follow_the_recursion() -> None:
    net, decay = _net(), 0.8
    ema = WeightEma(net, EmaConfig(enabled=True, decay=decay))
    expected = net[0].weight.detach().clone()
    for value in (1.0, -3.0, 0.5):
        _set_weights(net, value)
        ema.update(epoch=0)
        expected = decay * expected + (1 - decay) * value
    assert torch.allclose(ema.model[0].weight, expected, atol=1e-6)


def test_every_steps_and_warmup_epochs() -> None:
    net = _net()
    ema = WeightEma(net, EmaConfig(enabled=True, decay=0.9, every_steps=4, warmup_epochs=1))
    assert [step for step in range(1, 13) if ema.due(step)] == [4, 8, 12]
    _set_weights(net, 5.0)
    ema.update(epoch=0)  # within the warm-up: a copy
    assert torch.equal(ema.model[0].weight, net[0].weight)
    _set_weights(net, 1.0)
    ema.update(epoch=1)  # after it: averaging from that copy
    assert torch.allclose(ema.model[0].weight, torch.full_like(net[0].weight, 0.9 * 5.0 + 0.1 * 1.0))


def test_the_average_is_not_trained() -> None:
    net = _net()
    ema = WeightEma(net, EmaConfig(enabled=True))
    assert all(not p.requires_grad for p in ema.model.parameters())
    assert all(p.requires_grad for p in net.parameters())


def test_checkpoint_part_round_trips_and_starts_from_weights_when_absent() -> None:
    net = _net()
    ema = WeightEma(net, EmaConfig(enabled=True, decay=0.7))
    _set_weights(net, 3.0)
    ema.update(epoch=0)
    state = ema.state_dict()
    assert set(state) == {"weights", "updates"} and state["updates"] == 2
    assert set(state["weights"]) == set(net.state_dict())  # the bare model's keys: `dtrain eval --weights ema`

    other = WeightEma(_net(), EmaConfig(enabled=True, decay=0.7))
    other.load_state_dict(state)
    for key, tensor in ema.model.state_dict().items():
        assert torch.equal(other.model.state_dict()[key], tensor)
    _set_weights(net, 1.0)
    _set_weights(other.source, 1.0)
    ema.update(epoch=0)
    other.update(epoch=0)
    assert torch.equal(other.model[0].weight, ema.model[0].weight)  # continues bitwise

    fresh = WeightEma(net, EmaConfig(enabled=True))
    _set_weights(fresh.model, 9.0)
    fresh.load_state_dict(None)  # a checkpoint written without EMA: start from the restored weights
    assert torch.equal(fresh.model[0].weight, net[0].weight)


def test_half_precision_weights_are_averaged_in_float32() -> None:
    net = _net().to(torch.bfloat16)
    ema = WeightEma(net, EmaConfig(enabled=True, decay=0.9998))
    assert ema.model[0].weight.dtype == torch.float32
    before = ema.model[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update(epoch=0)
    moved = ema.model[0].weight - before
    assert torch.allclose(moved, torch.full_like(moved, 2e-4), rtol=1e-2)  # bf16 would not have moved


def test_best_ema_follows_its_own_metric(tmp_path: Path) -> None:
    """best.pt is chosen on the live weights' error, best_ema.pt on the EMA's: here they differ."""
    manager = CheckpointManager(tmp_path, keep_last=1, keep_best=True, rank=0)
    for step, (live, ema) in enumerate([(50.0, 60.0), (40.0, 45.0), (45.0, 30.0), (35.0, 33.0)], start=1):
        manager.save({"step": step}, step, metric=live, other_bests={BEST_EMA_NAME: ema})
    assert manager.best_metric(BEST_NAME) == 35.0 and manager.best_metric(BEST_EMA_NAME) == 30.0
    assert manager.load(tmp_path / BEST_NAME)["step"] == 4
    assert manager.load(tmp_path / BEST_EMA_NAME)["step"] == 3  # kept although retention removed ckpt 3
    manager.record_metric(4, 20.0, best=BEST_EMA_NAME)  # the final evaluation, after the final save
    assert manager.best_metric(BEST_EMA_NAME) == 20.0 and manager.load(tmp_path / BEST_EMA_NAME)["step"] == 4
    assert manager.best_metric(BEST_NAME) == 35.0  # the live metric of ckpt 4 is untouched


@pytest.mark.parametrize("override, problem", [
    ("ema.decay=1.0", "ema.decay must be in [0, 1)"),
    ("ema.every_steps=0", "ema.every_steps must be positive"),
    ("ema.warmup_epochs=-1", "ema.warmup_epochs must not be negative"),
    ("ema.decai=0.9", "ema.decay"),
])
def test_bad_ema_keys_are_one_line(override: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace(")", r"\)").replace("(", r"\(")):
        load_config("cifar10_resnet20", ["ema.enabled=true", override])
