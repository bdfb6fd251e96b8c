"""Smoke mode (`train.smoke=true`): the recipe as it is, with every image size scaled down together.

A cluster recipe (resnet200_preact: crops of 224 from images resized to 256..480) costs minutes
per step on a CPU. Scaling only `data.synthetic_image_size` does not help, because the
augmentation still crops 224. Smoke mode scales the train crop, the scale-jitter range, the
evaluation resize/crop and scales, and the synthetic images by one factor (crop -> SMOKE_CROP),
and evaluates at most SMOKE_EVAL_SAMPLES images, so the same command line that will run on the
cluster runs a few steps here in seconds per step:

    torchrun --nproc-per-node 2 -m dtrain.train resnet200_preact data.loader=synthetic \\
        train.smoke=true optim.batch_size=8 schedule.max_iters=3 tracking.backend=jsonl

Model, optimiser, schedule, distribution and checkpoints are untouched: what is checked is the
launch, not the numbers. Recipes whose crop is already small (CIFAR, 32) keep their sizes.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

from dtrain.config import RunConfig

SMOKE_CROP = 32  # the train/eval crop of a smoke run: CIFAR's, which every net of both papers takes
SMOKE_EVAL_SAMPLES = 64


def smoke_config(config: RunConfig) -> RunConfig:
    """`config` with every image size scaled by SMOKE_CROP / data.crop_size and a short evaluation."""
    data, evaluation = config.data, config.eval
    factor = min(1.0, SMOKE_CROP / data.crop_size)

    def scaled(size: int) -> int:
        return max(1, round(size * factor))

    data = dataclasses.replace(
        data,
        crop_size=scaled(data.crop_size),
        scale_range=[scaled(s) for s in data.scale_range],
        pad=scaled(data.pad) if data.pad else 0,
        val_resize=scaled(data.val_resize),
        val_crop=scaled(data.val_crop),
        synthetic_image_size=scaled(data.synthetic_image_size),
        # progressive resizing's ramp is rounded to multiples of 32 (FFCV's rule), which do not scale:
        # its ends stay at 32 or more (validation's floor), the smoke crop
        min_res=None if data.min_res is None else max(SMOKE_CROP, scaled(data.min_res)),
        max_res=None if data.max_res is None else max(SMOKE_CROP, scaled(data.max_res)),
    )
    # single-320 is a fixed 320 crop (R2): evaluate the scaled centre crop instead.
    mode = "center" if evaluation.mode == "single-320" else evaluation.mode
    limit = min(evaluation.max_samples or SMOKE_EVAL_SAMPLES, SMOKE_EVAL_SAMPLES)
    evaluation = dataclasses.replace(evaluation, mode=mode, scales=[scaled(s) for s in evaluation.scales],
                                     max_samples=limit, batch_size=min(evaluation.batch_size, limit))
    return dataclasses.replace(config, data=data, eval=evaluation)


class LimitedEval:
    """The first batches of an eval loader, about `max_samples` images over all ranks.

    Every rank yields the same number of batches (the eval loaders pad ranks to equal length), so
    the all-reduce after evaluation still meets."""

    def __init__(self, loader: Any, max_samples: int, global_batch: int) -> None:
        self.loader = loader
        self.max_batches = max(1, math.ceil(max_samples / max(1, global_batch)))

    def __len__(self) -> int:
        return min(len(self.loader), self.max_batches)

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.max_batches)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


def limit_eval(loader: Any, max_samples: int, global_batch: int) -> Any:
    """`loader` unchanged when max_samples is 0, else its first batches (LimitedEval)."""
    return LimitedEval(loader, max_samples, global_batch) if max_samples > 0 else loader
