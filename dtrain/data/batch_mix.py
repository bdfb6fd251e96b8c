"""Mixup and CutMix of the training batch on the device, after random erasing (the `augment.*` keys).

Every loader (torch, synthetic, gpu, DALI, FFCV) hands the training step an on-device batch of
normalised images and int64 labels; BatchAugment turns it into what the step trains on:

    images, targets = batch_augment(images, labels, step=k, micro=m)

The soft-target contract (what the loss receives):
  - mixing on (augment.mixup_alpha > 0 or augment.cutmix_alpha > 0): `targets` is float32
    [B, num_classes], each row a distribution over the classes that sums to 1 (one-hot for a batch
    that augment.mix_prob left unmixed), NOT label-smoothed;
  - mixing off: `targets` is the int64 [B] labels, as the loader gave them.
  The loss applies label smoothing to either form once, as F.cross_entropy(label_smoothing=e) does
  ((1 - e) * t + e / C). Smoothing is linear, so the smoothed mix equals the mix of smoothed one-hots
  that timm's Mixup builds. The predicted class to score training top-1 against is targets.argmax(1).

Mixing follows torchvision's references (transforms.RandomMixup / RandomCutmix) and timm's Mixup
(mode "batch"): one weight lam ~ Beta(alpha, alpha) per batch, each image paired with the one
before it (the batch rolled by one); with both on, CutMix with probability augment.switch_prob.
Mixup: x = lam * x + (1 - lam) * x_rolled. CutMix: a box of side sqrt(1 - lam) times the image's,
centred at a uniform pixel and clipped to the image, is pasted from x_rolled, and lam becomes the
fraction of the image's own pixels kept (torchvision's correction), which is the weight of its
own label. Random erasing (dtrain.data.random_erasing) comes first, as it does in torchvision's and
timm's recipes, where it is a per-image transform and mixing runs on the batch.

Randomness never touches the global RNG streams (a resumed run stays bitwise the uninterrupted
one): each draw comes from its own NumPy generator, seeded by
  mixing:  (train.seed, step, micro-batch, rank): one draw per rank's batch, as the references
           mix within each process's batch;
  erasing: (train.seed, step, micro-batch), one draw per image of the whole global micro-batch,
           rank r taking rows [r * B, (r + 1) * B): the image at a position of the global batch
           (dtrain.data.sampling gives rank r those rows of the epoch's order) is erased alike at
           any world size. The device batch carries no sample indices (DALI, FFCV and gpu
           loaders hand over images and labels only), so the key is the position, not the sample.
`step` is the optimiser step about to run (0-based) and `micro` the micro-batch within it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dtrain.config import AugmentConfig

from .random_erasing import draw_boxes, erase
from .sampling import mix_seed

MIX_STREAM, ERASE_STREAM = 0x313C, 0xE2A5  # keep the two generators' seeds apart


@dataclass(frozen=True)
class Mix:
    """What one batch gets: `lam` is the weight of each image's own label (1.0: left as it is)."""

    kind: str  # "none" | "mixup" | "cutmix"
    lam: float = 1.0
    box: tuple[int, int, int, int] | None = None  # cutmix: rows y1:y2, columns x1:x2 from the partner


def draw_mix(rng: np.random.Generator, cfg: AugmentConfig, height: int, width: int) -> Mix:
    """The mix of one batch of height x width images."""
    if rng.random() >= cfg.mix_prob:
        return Mix("none")
    use_cutmix = cfg.cutmix_alpha > 0 and (cfg.mixup_alpha <= 0 or rng.random() < cfg.switch_prob)
    alpha = cfg.cutmix_alpha if use_cutmix else cfg.mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    if not use_cutmix:
        return Mix("mixup", lam)
    centre_y, centre_x = int(rng.integers(height)), int(rng.integers(width))
    half = 0.5 * math.sqrt(1.0 - lam)
    half_h, half_w = int(half * height), int(half * width)
    y1, y2 = max(centre_y - half_h, 0), min(centre_y + half_h, height)
    x1, x2 = max(centre_x - half_w, 0), min(centre_x + half_w, width)
    kept = 1.0 - (y2 - y1) * (x2 - x1) / (height * width)
    return Mix("cutmix", kept, (y1, y2, x1, x2))


def apply_mix(images: torch.Tensor, targets: torch.Tensor, mix: Mix) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and [B, C] targets mixed with the batch rolled by one (image i with image i - 1)."""
    if mix.kind == "none":
        return images, targets
    partner = images.roll(1, 0)
    if mix.kind == "mixup":
        images = images * mix.lam + partner * (1.0 - mix.lam)
    else:
        assert mix.box is not None, "a cutmix Mix carries its box"
        y1, y2, x1, x2 = mix.box
        images = images.clone()
        images[:, :, y1:y2, x1:x2] = partner[:, :, y1:y2, x1:x2]
    return images, targets * mix.lam + targets.roll(1, 0) * (1.0 - mix.lam)


class BatchAugment:
    """Random erasing, then mixup/CutMix, of one rank's micro-batch (see the module's docstring)."""

    def __init__(self, cfg: AugmentConfig, *, num_classes: int, seed: int, rank: int, world_size: int) -> None:
        self.cfg, self.num_classes = cfg, num_classes
        self.seed, self.rank, self.world_size = seed, rank, world_size

    @property
    def mixes(self) -> bool:
        """Whether targets are distributions (float [B, C]) rather than labels (int64 [B])."""
        return self.cfg.mixup_alpha > 0 or self.cfg.cutmix_alpha > 0

    @property
    def erases(self) -> bool:
        return self.cfg.erasing_prob > 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, *, step: int,
                 micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        if self.erases:
            images = self._erase(images, step, micro)
        if not self.mixes:
            return images, labels
        targets = F.one_hot(labels.to(images.device), self.num_classes).to(torch.float32)
        rng = np.random.default_rng(mix_seed(self.seed, step, micro, self.rank, MIX_STREAM))
        return apply_mix(images, targets, draw_mix(rng, self.cfg, images.shape[2], images.shape[3]))

    def _erase(self, images: torch.Tensor, step: int, micro: int) -> torch.Tensor:
        batch = images.shape[0]
        rng = np.random.default_rng(mix_seed(self.seed, step, micro, ERASE_STREAM))
        boxes = draw_boxes(rng, batch * self.world_size, images.shape[2], images.shape[3],
                           prob=self.cfg.erasing_prob, scale=self.cfg.erasing_scale, ratio=self.cfg.erasing_ratio)
        return erase(images, boxes.rows(self.rank * batch, (self.rank + 1) * batch))
