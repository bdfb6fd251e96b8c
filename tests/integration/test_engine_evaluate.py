"""Evaluation: 10-crop and multi-scale errors equal a direct computation; padding never counts."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from gloo_processes import run_on_gloo
from PIL import Image
from torch import nn

from dtrain.config import DataConfig
from dtrain.data import build_eval_loader
from dtrain.data.sources import SyntheticSource
from dtrain.data.transforms import RESAMPLE
from dtrain.distributed.context import DistContext
from dtrain.engine.evaluate import averaged_scores, evaluate

SIZE, CROP, SAMPLES, CLASSES = 12, 8, 7, 10
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def _data() -> DataConfig:
    return DataConfig(loader="synthetic", synthetic_samples=SAMPLES, synthetic_image_size=SIZE,
                      val_resize=SIZE, val_crop=CROP, mean=MEAN, std=STD, workers=0)


def _tiny_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, CLASSES, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def _normalise(pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels.astype(np.float64) / 255.0).permute(2, 0, 1)
    mean, std = (torch.tensor(v, dtype=torch.float64).view(3, 1, 1) for v in (MEAN, STD))
    x = (x - mean) / std
    return x.float()


def _direct_views(image: Image.Image, mode: str, scales: list[int]) -> list[torch.Tensor]:
    """The papers' views computed by hand with numpy slicing (and PIL only for rescaling)."""
    if mode == "ten-crop":
        a = np.asarray(image)
        h, w = a.shape[:2]
        corners = [(0, 0), (0, w - CROP), (h - CROP, 0), (h - CROP, w - CROP), ((h - CROP) // 2, (w - CROP) // 2)]
        crops = [a[top:top + CROP, left:left + CROP] for top, left in corners]
        return [_normalise(c) for c in crops + [c[:, ::-1] for c in crops]]
    views = []
    for scale in scales:
        a = np.asarray(image if scale == SIZE else image.resize((scale, scale), RESAMPLE))
        views += [_normalise(a), _normalise(a[:, ::-1])]
    return views


def _direct_errors(model: nn.Module, mode: str, scales: list[int]) -> tuple[float, float]:
    source = SyntheticSource(SAMPLES, SIZE, CLASSES, "val")
    top1 = top5 = 0
    with torch.no_grad():
        for index in range(SAMPLES):
            views = _direct_views(source.image(index), mode, scales)
            probs = torch.stack([torch.softmax(model(v[None]), 1)[0] for v in views]).mean(0)
            ranked = probs.argsort(descending=True).tolist()
            top1 += ranked[0] == source.label(index)
            top5 += source.label(index) in ranked[:5]
    return 100.0 * (1 - top1 / SAMPLES), 100.0 * (1 - top5 / SAMPLES)


@pytest.mark.parametrize("mode,scales", [("ten-crop", []), ("multi-scale", [SIZE, 6, 16])])
def test_eval_modes_equal_a_direct_computation(mode, scales):
    model = _tiny_model()
    loader = build_eval_loader(_data(), mode=mode, batch_size=3, rank=0, world_size=1, scales=scales,
                               num_classes=CLASSES)
    source = SyntheticSource(SAMPLES, SIZE, CLASSES, "val")
    seen = 0
    for batch in loader:  # per image: the loader's views and our averaging == the direct scores
        assert len(batch.views) == (10 if mode == "ten-crop" else 2 * len(scales))
        scores = averaged_scores(model, batch.views)
        for row in range(len(batch.labels)):
            index = seen + row
            direct = torch.stack([torch.softmax(model(v[None]), 1)[0]
                                  for v in _direct_views(source.image(index), mode, scales)]).mean(0)
            torch.testing.assert_close(scores[row], direct, atol=1e-5, rtol=1e-4)
        seen += len(batch.labels)
    result = evaluate(model, loader, DistContext())
    assert result.samples == SAMPLES
    assert (result.top1_err, result.top5_err) == pytest.approx(_direct_errors(model, mode, scales))


def _eval_worker(world: int, rank: int) -> tuple[float, float, int]:
    loader = build_eval_loader(_data(), mode="ten-crop", batch_size=3, rank=rank, world_size=world,
                               num_classes=CLASSES)
    result = evaluate(_tiny_model(), loader, DistContext(rank=rank, world_size=world, backend="gloo"))
    return result.top1_err, result.top5_err, result.samples


@pytest.mark.slow
@pytest.mark.distributed
def test_eval_under_two_processes_counts_each_real_image_once():
    """7 images over 2 ranks: one padded sample, not counted; the same errors as one process."""
    out = run_on_gloo(functools.partial(_eval_worker, 2), 2)
    single = evaluate(_tiny_model(), build_eval_loader(_data(), mode="ten-crop", batch_size=3, rank=0,
                                                        world_size=1, num_classes=CLASSES), DistContext())
    expected = (single.top1_err, single.top5_err, SAMPLES)
    assert out[0] == pytest.approx(expected) and out[1] == pytest.approx(expected)
