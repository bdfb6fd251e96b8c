"""eval.flip_tta: each evaluation view is also scored horizontally flipped (test-time augmentation).

FFCV's ResNet configs evaluate this way (`lr_tta`: the model's output on the image plus its output
on the image flipped along the width). Here the flips are appended to the batch's views, on the
device, after any eval loader, and the evaluation averages the softmax over all views as it does
for R1's ten-crop and multi-scale views (dtrain.engine.evaluate.averaged_scores); FFCV sums the
logits, which can rank the classes differently only where the two views disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from .loaders import EvalBatch


def with_flips(batch: EvalBatch) -> EvalBatch:
    """The batch's views followed by their horizontal flips (twice the views, same labels)."""
    return batch._replace(views=[*batch.views, *(torch.flip(view, dims=[3]) for view in batch.views)])


class FlipViews:
    """An eval loader whose batches carry each view and its horizontal flip."""

    def __init__(self, loader: Any) -> None:  # any eval loader: len() and EvalBatch iteration
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[EvalBatch]:
        return (with_flips(batch) for batch in self.loader)

    def __getattr__(self, name: str) -> Any:  # num_samples, batch_size, ... of the wrapped loader
        return getattr(self.loader, name)
