"""Mixup, CutMix and random erasing of the device batch (dtrain.data.batch_mix, dtrain.data.random_erasing)."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dtrain.config import AugmentConfig
from dtrain.data.batch_mix import BatchAugment, Mix, apply_mix, draw_mix
from dtrain.data.random_erasing import draw_boxes, erase
from dtrain.errors import ConfigError
from dtrain.resolve import load_config

CLASSES = 10


def batch(size: int = 8, side: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, side, side, generator=generator)
    labels = torch.randint(CLASSES, (size,), generator=generator)
    return images, labels


def augment(**keys) -> BatchAugment:
    return BatchAugment(AugmentConfig(**keys), num_classes=CLASSES, seed=7, rank=0, world_size=1)


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    return F.one_hot(labels, CLASSES).float()


@pytest.mark.parametrize("step", range(6))
def test_mixup_is_the_stated_convex_combination(step: int) -> None:
    images, _ = batch()
    labels = torch.arange(8) % CLASSES  # every partner's label differs from the image's own
    mixed, targets = augment(mixup_alpha=0.4)(images, labels, step=step)
    assert targets.dtype == torch.float32 and targets.shape == (8, CLASSES)
    assert torch.allclose(targets.sum(dim=1), torch.ones(8))
    lam = float(targets[0, labels[0]])
    assert 0 < lam < 1
    assert torch.allclose(mixed, lam * images + (1 - lam) * images.roll(1, 0), atol=1e-6)
    assert torch.allclose(targets, lam * one_hot(labels) + (1 - lam) * one_hot(labels.roll(1, 0)), atol=1e-6)


@pytest.mark.parametrize("step", range(6))
def test_cutmix_target_weight_is_the_kept_area(step: int) -> None:
    images, labels = batch(side=20)
    labels = torch.arange(8) % CLASSES  # every partner's label differs from the image's own
    mixed, targets = augment(cutmix_alpha=1.0)(images, labels, step=step)
    assert torch.allclose(targets.sum(dim=1), torch.ones(8))
    from_partner = (mixed != images).all(dim=1)  # [B, H, W]: pixels pasted from image i - 1
    assert torch.equal(mixed[:, :, from_partner[0]], images.roll(1, 0)[:, :, from_partner[0]])
    pasted = from_partner[0].float().mean().item()
    own_weight = targets[0, labels[0]].item()
    assert own_weight == pytest.approx(1 - pasted, abs=1e-6)
    assert targets[0, labels[-1]].item() == pytest.approx(pasted, abs=1e-6)
    rows, cols = from_partner[0].any(dim=1), from_partner[0].any(dim=0)
    assert from_partner[0].sum() == rows.sum() * cols.sum()  # one rectangle


def test_the_same_seed_and_step_give_the_same_mix_and_no_global_rng_is_drawn() -> None:
    images, labels = batch()
    aug = augment(mixup_alpha=0.2, cutmix_alpha=1.0, erasing_prob=0.5)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    first = aug(images, labels, step=3, micro=1)
    again = augment(mixup_alpha=0.2, cutmix_alpha=1.0, erasing_prob=0.5)(images, labels, step=3, micro=1)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    others = [aug(images, labels, step=s, micro=1)[1] for s in (4, 5, 6)]
    assert any(not torch.equal(first[1], other) for other in others)


def test_switch_and_mix_probabilities() -> None:
    rng = np.random.default_rng(0)
    both = AugmentConfig(mixup_alpha=0.2, cutmix_alpha=1.0)
    kinds = [draw_mix(rng, dataclasses.replace(both, switch_prob=p), 16, 16).kind
             for p in (0.0, 1.0) for _ in range(20)]
    assert kinds == ["mixup"] * 20 + ["cutmix"] * 20
    unmixed = [draw_mix(rng, dataclasses.replace(both, mix_prob=0.0), 16, 16) for _ in range(20)]
    assert all(m == Mix("none") for m in unmixed)
    images, labels = batch()
    same, targets = augment(mixup_alpha=0.2, mix_prob=0.0)(images, labels, step=0)
    assert torch.equal(same, images) and torch.equal(targets, one_hot(labels))  # one-hot: the contract's shape


def test_off_leaves_the_batch_and_the_labels() -> None:
    images, labels = batch()
    out_images, out_labels = augment()(images, labels, step=0)
    assert out_images is images and out_labels is labels


def test_label_smoothing_of_the_mix_equals_timm_mixing_smoothed_one_hots() -> None:
    """The contract: the loss smooths the mixed targets once; that is timm's mixup_target."""
    lam, eps = 0.3, 0.1
    logits = torch.randn(8, CLASSES)
    labels = torch.arange(8) % CLASSES
    _, targets = apply_mix(torch.zeros(8, 3, 4, 4), one_hot(labels), Mix("mixup", lam))
    smooth = one_hot(labels) * (1 - eps) + eps / CLASSES
    timm = smooth * lam + smooth.roll(1, 0) * (1 - lam)
    expected = -(timm * logits.log_softmax(dim=1)).sum(dim=1).mean()
    assert F.cross_entropy(logits, targets, label_smoothing=eps).item() == pytest.approx(expected.item(), rel=1e-6)


# -- random erasing --------------------------------------------------------------------------------


def test_erased_boxes_stay_within_the_scale_and_ratio_bounds() -> None:
    height, width, scale, ratio = 40, 30, (0.02, 0.33), (0.3, 3.3)
    boxes = draw_boxes(np.random.default_rng(1), 500, height, width, prob=1.0, scale=scale, ratio=ratio)
    chosen = boxes.erase
    assert chosen.mean() > 0.9  # at 40x30 almost every image finds a box that fits
    h, w = boxes.height[chosen].astype(float), boxes.width[chosen].astype(float)
    area = height * width
    # h = round(sqrt(a * r)), w = round(sqrt(a / r)): within half a pixel of the real-valued box
    assert np.all((h - 0.5) * (w - 0.5) <= scale[1] * area) and np.all((h + 0.5) * (w + 0.5) >= scale[0] * area)
    assert np.all((h - 0.5) / (w + 0.5) <= ratio[1]) and np.all((h + 0.5) / (w - 0.5) >= ratio[0])
    assert np.all(boxes.top[chosen] + h <= height) and np.all(boxes.left[chosen] + w <= width)
    assert np.all(boxes.top >= 0) and np.all(boxes.left >= 0)


def test_erase_zeroes_exactly_the_box() -> None:
    images = torch.randn(64, 3, 24, 24) + 5  # never 0 by chance
    boxes = draw_boxes(np.random.default_rng(2), 64, 24, 24, prob=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3))
    erased = erase(images, boxes)
    for i in range(64):
        zero = erased[i] == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])
        if not boxes.erase[i]:
            assert torch.equal(erased[i], images[i])
            continue
        t, left, h, w = (int(a[i]) for a in (boxes.top, boxes.left, boxes.height, boxes.width))
        expected = torch.zeros(24, 24, dtype=torch.bool)
        expected[t:t + h, left:left + w] = True
        assert torch.equal(zero[0], expected)
        assert torch.equal(erased[i][:, ~expected], images[i][:, ~expected])


def test_erasing_leaves_one_minus_p_of_the_images_in_expectation() -> None:
    """A seeded count: 4,000 images at p=0.5 (binomial sd ~32; 5 sd allowed)."""
    images = torch.ones(500, 3, 32, 32)
    aug = augment(erasing_prob=0.5)
    untouched = sum(int((aug(images, torch.zeros(500, dtype=torch.int64), step=s)[0] == 1).flatten(1).all(1).sum())
                    for s in range(8))
    assert abs(untouched - 2000) < 5 * math.sqrt(4000 * 0.25)
    assert torch.equal(augment(erasing_prob=0.0)(images[:8], torch.zeros(8, dtype=torch.int64), step=0)[0],
                       images[:8])


def test_erasing_is_keyed_by_global_position_not_world_size() -> None:
    images = torch.randn(8, 3, 16, 16) + 5
    labels = torch.zeros(8, dtype=torch.int64)
    cfg = AugmentConfig(erasing_prob=0.5)
    alone = BatchAugment(cfg, num_classes=CLASSES, seed=3, rank=0, world_size=1)(images, labels, step=2)[0]
    for rank in (0, 1):
        part = slice(4 * rank, 4 * rank + 4)
        shared = BatchAugment(cfg, num_classes=CLASSES, seed=3, rank=rank, world_size=2)
        assert torch.equal(shared(images[part], labels[part], step=2)[0], alone[part])


@pytest.mark.parametrize("override, words", [
    ("augment.mix_prob=1.5", "augment.mix_prob must be a probability"),
    ("augment.mixup_alpha=-1", "augment.mixup_alpha must not be negative"),
    ("augment.erasing_scale=[0.5,0.2]", "augment.erasing_scale must be [low, high]"),
    ("augment.erasing_ratio=[0,3]", "augment.erasing_ratio must be [low, high]"),
])
def test_bad_augment_values_are_one_line_errors(override: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[")):
        load_config("cifar10_resnet20", [override])
