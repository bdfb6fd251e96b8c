"""The training loss (loss.name): cross-entropy or binary cross-entropy, with label smoothing.

A loss takes the logits and a target that is either class indices (shape [N], what the loaders
give) or a target distribution (shape [N, C], float: what a batch mixup/cutmix gives), so a batch
transform that mixes labels needs no loss of its own. Label smoothing is applied to either form in
the same way: target = (1 - s) * q + s / C, q the one-hot or given distribution (Szegedy et al.
2016, "Rethinking the Inception Architecture", sec. 7). Smoothing is linear, so smoothing a mixed
target equals mixing smoothed ones: torchvision smooths after mixing, timm's Mixup before, and
both give this distribution.

bce (timm's ResNet strikes back, Wightman et al. 2021, sec. 3): every class an independent
sigmoid, trained on the smoothed target's entries (timm's BinaryCrossEntropy: mean over the batch
and the classes), optionally binarised at loss.bce_target_threshold first.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dtrain.config import LossConfig

# (logits [N, C], target [N] class indices or [N, C] distribution) -> the batch's mean loss
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def target_distribution(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(1 - smoothing) * q + smoothing / num_classes, q = one-hot(target) or the given distribution."""
    q = F.one_hot(target, num_classes).float() if target.ndim == 1 else target.float()
    if smoothing == 0:
        return q
    return q * (1.0 - smoothing) + smoothing / num_classes


def hard_labels(target: torch.Tensor) -> torch.Tensor:
    """The class each sample counts as for the training top-1 error: the index, or the
    distribution's largest entry."""
    return target if target.ndim == 1 else target.argmax(dim=1)


def cross_entropy(cfg: LossConfig) -> LossFn:
    smoothing = cfg.label_smoothing

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # torch smooths both target forms as target_distribution does; with smoothing 0 and class
        # indices this is the papers' loss, bit for bit.
        target = target if target.ndim == 1 else target.float()
        return F.cross_entropy(logits.float(), target, label_smoothing=smoothing)

    return loss


def binary_cross_entropy(cfg: LossConfig) -> LossFn:
    smoothing, threshold = cfg.label_smoothing, cfg.bce_target_threshold

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dist = target_distribution(target, logits.shape[1], smoothing)
        if threshold is not None:
            dist = (dist > threshold).float()
        return F.binary_cross_entropy_with_logits(logits.float(), dist)

    return loss


# loss.name -> the loss built from the loss section.
LOSSES: dict[str, Callable[[LossConfig], LossFn]] = {
    "cross_entropy": cross_entropy,
    "bce": binary_cross_entropy,
}


def build_loss(cfg: LossConfig) -> LossFn:
    return LOSSES[cfg.name](cfg)  # the resolver checked the name (validation.CHOICES)
