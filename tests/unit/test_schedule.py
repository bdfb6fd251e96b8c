"""The papers' learning rates at given iterations/epochs (SPEC.md section 3)."""

from __future__ import annotations

import pytest

from dtrain.config import OptimConfig, ScheduleConfig, load_config
from dtrain.engine.lr_schedule import build_schedule, scaled_lr
from dtrain.errors import ConfigError


def _schedule(recipe: str, *overrides: str, total: int = 64000):
    cfg = load_config(recipe, list(overrides))
    return build_schedule(cfg.schedule, scaled_lr(cfg.optim), total)


def test_cifar_step_iters_divides_by_ten_at_32k_and_48k():
    s = _schedule("cifar10_resnet20")
    assert s.lr_at(0, 0) == pytest.approx(0.1)
    assert s.lr_at(31999, 80) == pytest.approx(0.1)
    assert s.lr_at(32000, 82) == pytest.approx(0.01)
    assert s.lr_at(47999, 122) == pytest.approx(0.01)
    assert s.lr_at(48000, 123) == pytest.approx(0.001)
    assert s.lr_at(63999, 163) == pytest.approx(0.001)
    assert load_config("cifar10_resnet20").schedule.max_iters == 64000


def test_resnet110_warms_up_at_001_for_400_iterations_then_01():
    s = _schedule("cifar10_resnet110")
    assert [s.lr_at(i, 0) for i in (0, 1, 399)] == pytest.approx([0.01] * 3)
    assert s.lr_at(400, 1) == pytest.approx(0.1)
    assert s.lr_at(32000, 82) == pytest.approx(0.01)
    r2 = _schedule("cifar10_resnet164_preact")  # R2 CIFAR: the same warm-up
    assert (r2.lr_at(399, 0), r2.lr_at(400, 1)) == pytest.approx((0.01, 0.1))


def test_r2_imagenet_step_epochs_at_30_and_60():
    s = _schedule("resnet200_preact", total=90 * 5005)
    assert s.lr_at(0, 0) == pytest.approx(0.1)
    assert s.lr_at(10 ** 5, 29) == pytest.approx(0.1)
    assert s.lr_at(10 ** 5, 30) == pytest.approx(0.01)
    assert s.lr_at(10 ** 5, 59) == pytest.approx(0.01)
    assert s.lr_at(10 ** 5, 60) == pytest.approx(0.001)


def test_r1_plateau_drops_after_patience_and_resumes_from_state():
    s = _schedule("resnet50", "schedule.plateau_patience=2", total=600000)
    assert s.lr_at(0, 0) == pytest.approx(0.1)
    for err in (50.0, 40.0, 39.99, 40.5):  # 39.99 is within the 1e-3 relative threshold
        assert s.observe(err) is False
    assert s.lr_at(5000, 4) == pytest.approx(0.1)
    assert s.observe(40.2) is True  # third evaluation without improvement > patience 2
    assert s.lr_at(5000, 5) == pytest.approx(0.01)
    resumed = _schedule("resnet50", "schedule.plateau_patience=2", total=600000)
    resumed.load_state_dict(s.state_dict())
    assert resumed.lr_at(6000, 6) == pytest.approx(0.01)
    assert [resumed.observe(e) for e in (39.0, 39.5, 39.5, 39.5)] == [False, False, False, True]
    assert resumed.lr_at(7000, 9) == pytest.approx(0.001)


def test_linear_scaling_rule_and_linear_warmup_for_large_batches():
    optim = OptimConfig(batch_size=8192, lr=0.1, scale_lr=True, reference_batch=256)
    assert scaled_lr(optim) == pytest.approx(0.1 * 8192 / 256)
    assert scaled_lr(OptimConfig(batch_size=1024, lr=0.1)) == pytest.approx(0.1)  # off by default
    cfg = ScheduleConfig(kind="step_epochs", milestones=[30, 60], warmup="linear", warmup_iters=100,
                         warmup_lr=0.1)
    s = build_schedule(cfg, scaled_lr(optim), 10 ** 6)
    assert s.lr_at(0, 0) == pytest.approx(0.1)
    assert s.lr_at(50, 0) == pytest.approx(0.1 + (3.2 - 0.1) / 2)
    assert s.lr_at(100, 0) == pytest.approx(3.2)
    assert s.lr_at(10 ** 5, 30) == pytest.approx(0.32)


def test_cosine_and_constant():
    cos = build_schedule(ScheduleConfig(kind="cosine"), 0.1, 1000)
    assert (cos.lr_at(0, 0), cos.lr_at(500, 0), cos.lr_at(1000, 0)) == pytest.approx((0.1, 0.05, 0.0))
    assert build_schedule(ScheduleConfig(kind="constant"), 0.1, 10).lr_at(9, 9) == pytest.approx(0.1)


def test_warmup_without_iterations_is_a_config_error():
    with pytest.raises(ConfigError, match="warmup_iters"):
        build_schedule(ScheduleConfig(warmup="constant", warmup_iters=0), 0.1, 10)
