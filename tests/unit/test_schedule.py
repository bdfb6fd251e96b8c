"""The papers' learning rates at given iterations/epochs (R1 sec. 3.4 and 4.2; R2 for its pre-activation
nets), and the later recipes' against their projects' schedulers (torchvision per epoch, timm's cosine)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dtrain.config import OptimConfig, ScheduleConfig
from dtrain.engine.lr_schedule import build_schedule, scaled_lr
from dtrain.errors import ConfigError
from dtrain.resolve import load_config


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


def _observe(schedule, start: int, errors: list[float], every: int = 50) -> None:
    """Feed the schedule the synced training errors of steps start+1.. as the loop does, `every` a sync."""
    for first in range(0, len(errors), every):
        window = errors[first:first + every]
        schedule.observe_training(start + first + len(window), window)


def test_r1_warm_up_ends_when_the_running_training_error_crosses_80_percent():
    # R1 sec. 4.2: "0.01 ... until the training error is below 80% (about 400 iterations)"
    s = _schedule("cifar10_resnet110")
    assert (s.cfg.warmup_until_err, s.cfg.warmup_iters) == (80.0, 400)
    errors = [90.0] * 200 + [79.0] * 200  # the running mean (last 50 steps) is below 80 from step 250 on
    _observe(s, 0, errors[:100])
    assert s.lr_at(100, 0) == pytest.approx(0.01)
    _observe(s, 100, errors[100:250])
    assert s.lr_at(249, 0) == pytest.approx(0.01) and s.lr_at(250, 0) == pytest.approx(0.1)
    assert [s.lr_at(i, 0) for i in (251, 399, 400)] == pytest.approx([0.1] * 3)
    assert s.lr_at(32000, 82) == pytest.approx(0.01)  # the lr drops are the recipe's


def test_a_run_that_stays_above_80_percent_warms_up_until_the_400_iteration_cap():
    s = _schedule("cifar10_plain110")  # R2 Table 1's plain net warms up like its other rows
    _observe(s, 0, [95.0] * 400)
    assert (s.lr_at(399, 1), s.lr_at(400, 1)) == pytest.approx((0.01, 0.1))
    _observe(s, 400, [10.0] * 50)  # after the cap the criterion has nothing left to decide
    assert s.state_dict()["warmup_ended_at"] is None


def test_the_running_error_is_the_mean_of_the_last_50_steps_not_one_batch():
    s = _schedule("cifar10_resnet110")
    _observe(s, 0, [100.0] * 49 + [0.0], every=50)  # one lucky batch: mean 98 %
    assert s.lr_at(50, 0) == pytest.approx(0.01)
    _observe(s, 50, [60.0] * 10, every=10)  # last 50: 39 x 100 + 0 + 10 x 60 -> 90 %
    assert s.lr_at(60, 0) == pytest.approx(0.01)
    _observe(s, 60, [60.0] * 40, every=10)  # last 50 at step 70: 82 %; at step 80: 19 x 100 + 0 + 30 x 60 -> 74 %
    assert (s.lr_at(79, 0), s.lr_at(80, 0)) == pytest.approx((0.01, 0.1))
    assert s.state_dict()["warmup_ended_at"] == 80


def test_warm_up_decision_survives_a_resume_exactly():
    errors = [90.0] * 120 + [70.0] * 280
    whole = _schedule("cifar10_resnet110")
    _observe(whole, 0, errors, every=40)
    first = _schedule("cifar10_resnet110")
    _observe(first, 0, errors[:120], every=40)  # a checkpoint at step 120, mid-window
    resumed = _schedule("cifar10_resnet110")
    resumed.load_state_dict(first.state_dict())
    _observe(resumed, 120, errors[120:], every=40)
    assert [resumed.lr_at(i, 0) for i in range(400)] == [whole.lr_at(i, 0) for i in range(400)]
    assert whole.state_dict()["warmup_ended_at"] == 160  # last 50 at step 160: 10 x 90 + 40 x 70 -> 74 %
    plateau = _schedule("resnet50", "schedule.warmup=constant", "schedule.warmup_iters=10",
                        "schedule.warmup_until_err=50")  # the plateau state keeps it too
    plateau.observe_training(4, [10.0])
    restored = _schedule("resnet50", "schedule.warmup=constant", "schedule.warmup_iters=10",
                         "schedule.warmup_until_err=50")
    restored.load_state_dict(plateau.state_dict())
    assert restored.lr_at(5, 0) == pytest.approx(0.1) and plateau.state_dict()["warmup_ended_at"] == 4


def test_warm_up_criterion_needs_a_constant_warm_up():
    with pytest.raises(ConfigError, match="warmup=constant"):
        build_schedule(ScheduleConfig(warmup="linear", warmup_iters=10, warmup_until_err=80.0), 0.1, 10)
    with pytest.raises(ConfigError, match="warmup_until_err"):
        load_config("cifar10_resnet110", ["schedule.warmup_until_err=180"])
    # an old checkpoint's schedule state (no warm-up decision recorded) still loads
    s = _schedule("cifar10_resnet110")
    s.load_state_dict({})
    assert s.lr_at(399, 0) == pytest.approx(0.01)


TINY_RUN = ["data.loader=synthetic", "data.synthetic_samples=48", "data.synthetic_image_size=16", "data.crop_size=16",
            "data.val_resize=16", "data.val_crop=16", "data.workers=0", "optim.batch_size=4", "eval.batch_size=16",
            "tracking.backend=none", "train.device=cpu", "train.sync_every=4", "schedule.max_iters=12",
            "checkpoint.every_iters=4", "checkpoint.every_minutes=0", "checkpoint.at_epoch_end=false",
            "checkpoint.keep_last=5", "eval.every_epochs=0", "schedule.warmup=constant", "schedule.warmup_iters=10",
            "schedule.warmup_until_err=100"]


def _train_lrs(run_dir, *extra: str) -> list[float]:
    from dtrain import builders
    from dtrain.distributed.context import DistContext

    cfg = load_config("digits_resnet20", [*TINY_RUN, f"run_dir={run_dir}", *extra])
    ctx = DistContext()
    trainer = builders.build_trainer(cfg, ctx, 4)
    lrs, set_lr = [], trainer.engine.set_lr
    trainer.engine.set_lr = lambda lr: (lrs.append(lr), set_lr(lr))[1]
    assert trainer.run().stopped == "finished"
    return lrs


def test_the_trainer_checkpoints_the_warm_up_decision_and_a_resume_keeps_it(tmp_path):
    whole = _train_lrs(tmp_path / "whole")
    ckpt = tmp_path / "whole" / "checkpoints" / "ckpt-000000008.pt"
    ended = torch.load(ckpt, weights_only=False)["lr_schedule"]["warmup_ended_at"]
    assert ended in (4, 8)  # decided at a sync point before the cap (10): the test is not vacuous
    assert whole == [0.01] * ended + [0.1] * (12 - ended)
    resumed = _train_lrs(tmp_path / "resumed", f"checkpoint.resume={ckpt}")
    # steps 9 and 10 are below the cap: a resume that forgot the decision would warm up again
    assert resumed == whole[8:] == [0.1] * 4


def _warm_then(kind: str, **extra):
    """5 linear warm-up steps from 0.001, then `kind` from 0.1 down to min_lr over the other 100 of 105."""
    cfg = ScheduleConfig(kind=kind, warmup="linear", warmup_iters=5, warmup_lr=0.001, **extra)
    return build_schedule(cfg, 0.1, 105)


def test_linear_warm_up_then_cosine_over_the_rest_of_the_run():
    s = _warm_then("cosine")
    assert s.lr_at(0, 0) == pytest.approx(0.001)  # the first step
    assert s.lr_at(4, 0) == pytest.approx(0.001 + 0.099 * 4 / 5)  # the last warm-up step
    assert s.lr_at(5, 0) == pytest.approx(0.1)  # the boundary: the peak, where the cosine starts
    assert s.lr_at(55, 0) == pytest.approx(0.05)  # half-way through the decay
    assert s.lr_at(104, 0) == pytest.approx(0.05 * (1 + math.cos(math.pi * 99 / 100)))  # the last step
    assert s.lr_at(105, 0) == pytest.approx(0.0)


def test_linear_warm_up_then_linear_decay_to_min_lr():
    s = _warm_then("linear", min_lr=0.002)
    assert [s.lr_at(i, 0) for i in (0, 5, 30, 104, 105)] == pytest.approx(
        [0.001, 0.1, 0.002 + 0.098 * 0.75, 0.002 + 0.098 * 0.01, 0.002])
    no_warmup = build_schedule(ScheduleConfig(kind="linear"), 0.4, 8)
    assert [no_warmup.lr_at(i, 0) for i in range(8)] == pytest.approx([0.4 * (8 - i) / 8 for i in range(8)])


def test_cosine_without_warm_up_is_unchanged_bit_for_bit():
    s = build_schedule(ScheduleConfig(kind="cosine", min_lr=1e-5), 0.1, 997)
    assert [s.lr_at(i, 0) for i in range(997)] == [
        1e-5 + (0.1 - 1e-5) * 0.5 * (1 + math.cos(math.pi * min(i / 997, 1.0))) for i in range(997)]


def test_warm_up_in_epochs_is_that_many_epochs_of_iterations():
    cfg = ScheduleConfig(kind="cosine", warmup="linear", warmup_epochs=2, warmup_lr=0.0)
    s = build_schedule(cfg, 0.1, 100, iters_per_epoch=10)
    assert (s.lr_at(10, 1), s.lr_at(19, 1), s.lr_at(20, 2)) == pytest.approx((0.05, 0.095, 0.1))
    assert s.lr_at(60, 6) == pytest.approx(0.05)
    with pytest.raises(ConfigError, match="warmup_epochs needs the run's epoch length"):
        build_schedule(cfg, 0.1, 100)
    with pytest.raises(ConfigError, match="set one of them to 0"):
        load_config("digits_resnet20", ["schedule.warmup=linear", "schedule.warmup_epochs=2",
                                        "schedule.warmup_iters=5"])
    resolved = load_config("digits_resnet20", ["schedule.warmup=linear", "schedule.warmup_epochs=2"])
    assert resolved.schedule.warmup_epochs == 2


def _torchvision_lrs(epochs: int, warmup_epochs: int, lr: float, decay: float) -> list[float]:
    """torchvision references/classification/train.py's scheduler, built from torch's own classes:
    SequentialLR([LinearLR(start_factor=decay, total_iters=warmup), CosineAnnealingLR(T_max=epochs - warmup)],
    milestones=[warmup]), stepped once after every epoch; the lr each epoch trains with."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=decay, total_iters=warmup_epochs),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup_epochs, eta_min=0.0)],
        milestones=[warmup_epochs])
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_step_on_epoch_is_torchvisions_per_epoch_warm_up_and_cosine():
    """resnet50_tv2's schedule at 12 epochs (of 7 steps each) against torch's SequentialLR stepped per
    epoch, at every step of every epoch: each epoch is held at one value, the value torchvision trains it with."""
    tv2 = load_config("resnet50_tv2", []).schedule
    assert (tv2.step_on, tv2.decay_over, tv2.warmup_epochs) == ("epoch", "after_warmup", 5)
    epochs, per_epoch = 12, 7
    cfg = dataclasses.replace(tv2, epochs=epochs)
    ours = build_schedule(cfg, 0.5, epochs * per_epoch, iters_per_epoch=per_epoch)
    reference = _torchvision_lrs(epochs, 5, 0.5, decay=tv2.warmup_lr / 0.5)
    for epoch in range(epochs):
        held = [ours.lr_at(epoch * per_epoch + i, epoch) for i in range(per_epoch)]
        assert held == pytest.approx([reference[epoch]] * per_epoch, rel=1e-9, abs=1e-12), epoch
    assert reference[0] == pytest.approx(0.005) and reference[5] == pytest.approx(0.5)  # start and peak
    per_step = build_schedule(dataclasses.replace(cfg, step_on="iteration"), 0.5, epochs * per_epoch,
                              iters_per_epoch=per_epoch)
    assert per_step.lr_at(3, 0) > per_step.lr_at(0, 0) == ours.lr_at(3, 0)  # per iteration climbs within epoch 0


def _timm_cosine(epoch: int, epochs: int, warmup: int, lr: float, warmup_lr: float, min_lr: float) -> float:
    """timm/scheduler/cosine_lr.py CosineLRScheduler._get_lr(t) with t_initial=epochs, warmup_t=warmup,
    warmup_prefix=False, one cycle (timm's scheduler_factory for train.py's --sched cosine)."""
    if epoch < warmup:
        return warmup_lr + epoch * (lr - warmup_lr) / warmup
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs))


@pytest.mark.parametrize("recipe", ["resnet50_rsb_a1", "resnet50_rsb_a2", "resnet50_rsb_a3"])
def test_rsb_recipes_follow_timms_per_epoch_cosine_counted_from_epoch_0(recipe):
    config = load_config(recipe, [])
    s, lr = config.schedule, config.optim.lr
    assert (s.step_on, s.decay_over) == ("epoch", "whole_run")
    per_epoch = 3
    ours = build_schedule(s, lr, s.epochs * per_epoch, iters_per_epoch=per_epoch)
    for epoch in (0, 1, 4, 5, 6, s.epochs // 2, s.epochs - 1):
        expected = _timm_cosine(epoch, s.epochs, 5, lr, s.warmup_lr, s.min_lr)
        assert [ours.lr_at(epoch * per_epoch + i, epoch) for i in range(per_epoch)] == pytest.approx(
            [expected] * per_epoch, rel=1e-12), epoch
    # counted from epoch 0: at the warm-up's end the cosine is already past its peak
    assert ours.lr_at(5 * per_epoch, 5) < lr


def test_decay_over_whole_run_only_moves_where_the_decay_starts():
    after = _warm_then("cosine")
    whole = _warm_then("cosine", decay_over="whole_run")
    assert [whole.lr_at(i, 0) for i in range(5)] == [after.lr_at(i, 0) for i in range(5)]  # the same warm-up
    assert whole.lr_at(5, 0) == pytest.approx(0.05 * (1 + math.cos(math.pi * 5 / 105)))
    assert whole.lr_at(104, 0) == pytest.approx(0.05 * (1 + math.cos(math.pi * 104 / 105)))


def test_step_on_epoch_needs_the_epoch_length_and_known_names():
    with pytest.raises(ConfigError, match="step_on=epoch needs the run's epoch length"):
        build_schedule(ScheduleConfig(kind="cosine", step_on="epoch"), 0.1, 100)
    for key, bad in (("schedule.step_on", "epochs"), ("schedule.decay_over", "whole")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config("digits_resnet20", [f"{key}={bad}"])


def test_the_trainer_holds_the_lr_for_each_epoch_with_step_on_epoch(tmp_path):
    """The loop gives the schedule its epoch: 12 steps of 4 per epoch, a warm-up epoch, then a cosine
    counted from step 0: three values, each held for a whole epoch."""
    lrs = _train_lrs(tmp_path, "data.synthetic_samples=16", "schedule.warmup=linear", "schedule.warmup_until_err=null",
                     "schedule.warmup_iters=0", "schedule.warmup_epochs=1", "schedule.warmup_lr=0.01",
                     "schedule.kind=cosine", "schedule.step_on=epoch", "schedule.decay_over=whole_run",
                     "optim.lr=0.1", "optim.scale_lr=false")
    expected = [0.01] + [0.05 * (1 + math.cos(math.pi * epoch / 3)) for epoch in (1, 2)]
    assert lrs == pytest.approx([value for value in expected for _ in range(4)])
