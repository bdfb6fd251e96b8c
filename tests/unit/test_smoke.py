"""Smoke mode scales every image size of a big recipe together and shortens the evaluation."""

from __future__ import annotations

import pytest
import torch

from dtrain.data import build_eval_loader, build_train_loader
from dtrain.resolve import load_config
from dtrain.smoke import SMOKE_CROP, SMOKE_EVAL_SAMPLES, limit_eval

SMOKE = ["data.loader=synthetic", "train.smoke=true", "data.workers=0"]


def test_smoke_scales_crop_resize_scale_range_and_eval_together() -> None:
    full, smoke = load_config("resnet200_preact"), load_config("resnet200_preact", ["train.smoke=true"])
    factor = SMOKE_CROP / full.data.crop_size
    assert smoke.data.crop_size == SMOKE_CROP and smoke.data.val_crop == round(full.data.val_crop * factor)
    assert smoke.data.val_resize == round(full.data.val_resize * factor)
    assert smoke.data.scale_range == [round(s * factor) for s in full.data.scale_range]
    assert smoke.eval.scales == [round(s * factor) for s in full.eval.scales]
    assert 0 < smoke.eval.max_samples <= SMOKE_EVAL_SAMPLES
    # what is checked is the launch: model, optimiser, schedule and distribution stay the recipe's
    for section in ("model", "optim", "schedule", "distributed", "checkpoint"):
        assert getattr(smoke, section) == getattr(full, section)


def test_small_recipes_keep_their_sizes() -> None:
    full, smoke = load_config("cifar10_resnet110"), load_config("cifar10_resnet110", ["train.smoke=true"])
    assert smoke.data == full.data


def test_smoke_batches_are_small_and_the_evaluation_short() -> None:
    cfg = load_config("resnet200_preact", SMOKE)
    train = build_train_loader(cfg.data, batch_size=4, rank=0, world_size=1, seed=0, num_classes=10)
    train.set_epoch(0)
    images, _ = next(iter(train))
    assert tuple(images.shape) == (4, 3, SMOKE_CROP, SMOKE_CROP)
    evaluation = build_eval_loader(cfg.data, mode=cfg.eval.mode, batch_size=16, rank=0, world_size=1,
                                   scales=cfg.eval.scales, num_classes=10)
    limited = limit_eval(evaluation, cfg.eval.max_samples, 16)
    seen = sum(int(batch.valid.sum()) for batch in limited)
    assert seen == len(limited) * 16 <= cfg.eval.max_samples + 15 and seen < cfg.data.synthetic_samples
    assert limit_eval(evaluation, 0, 16) is evaluation


@pytest.mark.slow  # builds the 65M-parameter net
def test_a_smoke_step_of_resnet200_runs_on_cpu() -> None:
    from dtrain.builders import build_model

    cfg = load_config("resnet200_preact", SMOKE)
    model = build_model(cfg.model)
    loss = model(torch.randn(2, 3, cfg.data.crop_size, cfg.data.crop_size)).logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(loss)
