"""loss.*: label smoothing's target distribution, cross-entropy and BCE on class indices and on
target distributions (what a mixup/cutmix batch gives) against their closed forms, and the
training step taking either form."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dtrain.config import LossConfig
from dtrain.engine.loop import train_step
from dtrain.engine.loss import build_loss, hard_labels, target_distribution
from dtrain.errors import ConfigError
from dtrain.resolve import load_config

LOGITS = torch.tensor([[2.0, -1.0, 0.5, 0.0], [-0.5, 1.5, 0.25, -2.0], [0.0, 0.0, 3.0, 1.0]])
LABELS = torch.tensor([0, 2, 2])
SOFT = torch.tensor([[0.7, 0.3, 0.0, 0.0], [0.0, 0.4, 0.6, 0.0], [0.0, 0.0, 0.0, 1.0]])


def test_label_smoothing_puts_1_minus_s_plus_s_over_c_on_the_class_and_s_over_c_elsewhere():
    dist = target_distribution(LABELS, 4, 0.1)
    expected = torch.full((3, 4), 0.025)
    expected[torch.arange(3), LABELS] = 0.925
    assert torch.allclose(dist, expected) and torch.allclose(dist.sum(1), torch.ones(3))
    soft = target_distribution(SOFT, 4, 0.2)  # a mixed target: the same affine map, still a distribution
    assert torch.allclose(soft, 0.8 * SOFT + 0.05) and torch.allclose(soft.sum(1), torch.ones(3))
    assert torch.equal(target_distribution(LABELS, 4, 0.0), F.one_hot(LABELS, 4).float())


def _cross_entropy(logits, dist):
    return -(dist * F.log_softmax(logits, dim=1)).sum(1).mean()


def test_cross_entropy_is_minus_the_smoothed_targets_log_likelihood_for_indices_and_distributions():
    loss = build_loss(LossConfig(label_smoothing=0.1))
    smoothed = target_distribution(LABELS, 4, 0.1)
    assert loss(LOGITS, LABELS).item() == pytest.approx(_cross_entropy(LOGITS, smoothed).item())
    assert loss(LOGITS, SOFT).item() == pytest.approx(_cross_entropy(LOGITS, 0.9 * SOFT + 0.025).item())
    # No smoothing, class indices: the papers' loss, bit for bit.
    assert torch.equal(build_loss(LossConfig())(LOGITS, LABELS), F.cross_entropy(LOGITS, LABELS))


def _bce_closed_form(logits, target):
    total = 0.0
    for row_x, row_t in zip(logits.tolist(), target.tolist(), strict=True):
        for x, t in zip(row_x, row_t, strict=True):
            p = 1 / (1 + math.exp(-x))
            total -= t * math.log(p) + (1 - t) * math.log(1 - p)
    return total / logits.numel()


def test_bce_on_soft_targets_equals_the_closed_form():
    assert build_loss(LossConfig(name="bce"))(LOGITS, SOFT).item() == pytest.approx(_bce_closed_form(LOGITS, SOFT))
    smoothed = build_loss(LossConfig(name="bce", label_smoothing=0.1))
    assert smoothed(LOGITS, SOFT).item() == pytest.approx(_bce_closed_form(LOGITS, 0.9 * SOFT + 0.025))
    one_hot = F.one_hot(LABELS, 4).float()
    assert smoothed(LOGITS, LABELS).item() == pytest.approx(_bce_closed_form(LOGITS, 0.9 * one_hot + 0.025))


def test_bce_target_threshold_binarises_the_mixed_target():
    loss = build_loss(LossConfig(name="bce", bce_target_threshold=0.2))
    binary = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]])
    assert loss(LOGITS, SOFT).item() == pytest.approx(_bce_closed_form(LOGITS, binary))


class _LinearEngine:
    """The Engine calls train_step makes, over a linear model on flattened images."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(12, 4)
        self.losses = []

    def forward(self, images, *, boundary):
        return self.model(images.flatten(1))

    def backward(self, loss, *, boundary):
        self.losses.append(loss.detach())

    def step(self):
        pass

    def zero_grad(self):
        pass


def test_the_training_step_takes_class_indices_or_target_distributions():
    engine, images = _LinearEngine(), torch.randn(3, 3, 2, 2)
    bce = build_loss(LossConfig(name="bce"))
    loss, top1_err = train_step(engine, [(images, SOFT)], torch.device("cpu"), bce)  # type: ignore[arg-type]
    logits = engine.model(images.flatten(1)).detach()
    assert loss.item() == pytest.approx(_bce_closed_form(logits, SOFT), rel=1e-5)
    wrong = (logits.argmax(1) != torch.tensor([0, 2, 3])).sum().item()  # the distributions' largest entries
    assert top1_err.item() == pytest.approx(100.0 * wrong / 3)
    assert torch.equal(hard_labels(SOFT), torch.tensor([0, 2, 3])) and torch.equal(hard_labels(LABELS), LABELS)


def test_loss_keys_resolve_and_bad_values_are_one_line_config_errors():
    cfg = load_config("digits_resnet20", ["loss.name=bce", "loss.label_smoothing=0.1", "loss.bce_target_threshold=0.2"])
    assert (cfg.loss.name, cfg.loss.label_smoothing, cfg.loss.bce_target_threshold) == ("bce", 0.1, 0.2)
    assert load_config("digits_resnet20").loss == LossConfig()
    for overrides, message in ((["loss.name=focal"], "loss.name='focal' is not one of cross_entropy, bce"),
                               (["loss.label_smoothing=1.0"], "loss.label_smoothing must be in"),
                               (["loss.bce_target_threshold=0.2"], "needs loss.name=bce")):
        with pytest.raises(ConfigError, match=message):
            load_config("digits_resnet20", overrides)
