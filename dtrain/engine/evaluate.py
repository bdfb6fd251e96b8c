"""Top-1 / top-5 error on the validation split, correct under any world size.

Each batch comes from the eval loader as EvalBatch(views, labels, valid): one or more views of
each image (1 centre crop, R1's 10 crops, R1's fully-convolutional scales, R2's 320 crop; with
eval.flip_tta each view and its flip, dtrain.data.flip_tta). The
prediction of an image is the mean of the softmax scores of its views (R1 sec. 3.4). Padding
samples (valid=False), there so every rank runs the same number of batches, are not counted; the
counts of correct and valid samples are summed over ranks with one all_reduce at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dtrain.data.loaders import EvalBatch
from dtrain.distributed.context import DistContext
from dtrain.engine.precision import Autocast


@dataclass(frozen=True)
class EvalResult:
    top1_err: float  # percent, as in the papers' tables
    top5_err: float
    samples: int  # real (valid) samples counted, over all ranks

    def as_metrics(self, prefix: str = "val/", suffix: str = "") -> dict[str, float]:
        """suffix "_ema": the errors of the weight EMA (val/top1_err_ema)."""
        return {f"{prefix}top1_err{suffix}": self.top1_err, f"{prefix}top5_err{suffix}": self.top5_err}


def averaged_scores(model: nn.Module, views: Sequence[torch.Tensor], *, autocast: Autocast | None = None,
                    channels_last: bool = False) -> torch.Tensor:
    """Mean softmax over the views of a batch (at least one): [B, num_classes] in float32."""
    total: torch.Tensor | None = None
    for view in views:
        if channels_last:
            view = view.contiguous(memory_format=torch.channels_last)
        if autocast is not None:
            with autocast():
                logits = model(view)
        else:
            logits = model(view)
        probs = torch.softmax(logits.float(), dim=1)
        total = probs if total is None else total + probs
    if total is None:
        raise ValueError("averaged_scores needs at least one view")
    return total / len(views)


def correct_counts(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[top-1 correct, top-5 correct, valid count] of one batch (float64, on scores' device)."""
    k = min(5, scores.shape[1])
    topk = scores.topk(k, dim=1).indices
    hits = topk.eq(labels.view(-1, 1))
    valid = valid.to(torch.bool)
    top1 = (hits[:, 0] & valid).sum()
    top5 = (hits.any(dim=1) & valid).sum()
    return torch.stack([top1, top5, valid.sum()]).to(torch.float64)


@torch.no_grad()
def evaluate(model: nn.Module, eval_loader: Iterable[EvalBatch], ctx: DistContext, *,
             autocast: Autocast | None = None, channels_last: bool = False,
             should_stop: Callable[[], bool] | None = None) -> EvalResult | None:
    """Errors (%) of `model` (the bare module, not DDP) over the whole eval split of all ranks.

    `should_stop` (the trainer's preemption check, a collective every rank calls before each
    batch: every rank has the same number of batches) ends it early: the result is then None.
    """
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    try:
        for batch in eval_loader:
            if should_stop is not None and should_stop():
                return None
            views = [v.to(ctx.device, non_blocking=True) for v in batch.views]
            labels = batch.labels.to(ctx.device, non_blocking=True)
            valid = batch.valid.to(ctx.device, non_blocking=True)
            scores = averaged_scores(model, views, autocast=autocast, channels_last=channels_last)
            counts += correct_counts(scores, labels, valid)
    finally:
        model.train(was_training)
    counts = ctx.all_reduce_sum(counts).cpu()
    top1, top5, total = counts.tolist()
    if total <= 0:
        return EvalResult(top1_err=float("nan"), top5_err=float("nan"), samples=0)
    return EvalResult(top1_err=100.0 * (1 - top1 / total), top5_err=100.0 * (1 - top5 / total),
                      samples=int(total))
