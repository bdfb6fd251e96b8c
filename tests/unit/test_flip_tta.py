"""eval.flip_tta: each view also scored flipped, softmax averaged (dtrain.data.flip_tta)."""

from __future__ import annotations

import torch
from torch import nn

from dtrain.builders import build_val_loader
from dtrain.data.flip_tta import FlipViews, with_flips
from dtrain.data.loaders import EvalBatch
from dtrain.distributed.context import DistContext
from dtrain.engine.evaluate import averaged_scores, evaluate
from dtrain.resolve import load_config

CLASSES = 5


class PooledLinear(nn.Module):
    """Global average pooling, then a linear layer: blind to a horizontal flip."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class LeftHalf(nn.Module):
    """Looks at the left half of the image only: a flip changes its output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[..., : x.shape[3] // 2].mean(dim=(2, 3)))


def batches(count: int = 3) -> list[EvalBatch]:
    generator = torch.Generator().manual_seed(0)
    return [EvalBatch([torch.randn(4, 3, 8, 8, generator=generator)], torch.randint(CLASSES, (4,), generator=generator),
                      torch.ones(4, dtype=torch.bool)) for _ in range(count)]


def test_flip_views_append_each_view_flipped() -> None:
    batch = batches(1)[0]
    flipped = with_flips(batch)
    assert len(flipped.views) == 2 and torch.equal(flipped.views[1], batch.views[0].flip(3))
    assert torch.equal(flipped.views[1][..., 0], batch.views[0][..., -1])
    assert flipped.labels is batch.labels and flipped.valid is batch.valid


def test_a_flip_symmetric_model_scores_as_plain_evaluation() -> None:
    torch.manual_seed(0)
    model, data = PooledLinear(), batches()
    plain = evaluate(model, data, DistContext())
    tta = evaluate(model, FlipViews(data), DistContext())
    assert plain is not None and tta is not None
    assert (tta.top1_err, tta.top5_err, tta.samples) == (plain.top1_err, plain.top5_err, plain.samples)
    for batch in data:
        assert torch.allclose(averaged_scores(model, with_flips(batch).views), averaged_scores(model, batch.views),
                              atol=1e-6)


def test_an_asymmetric_model_scores_the_mean_of_image_and_flip() -> None:
    torch.manual_seed(0)
    model = LeftHalf()
    with torch.no_grad():
        for batch in batches():
            image = batch.views[0]
            mean = (model(image).softmax(1) + model(image.flip(3)).softmax(1)) / 2
            assert not torch.allclose(model(image).softmax(1), mean)
            assert torch.allclose(averaged_scores(model, with_flips(batch).views), mean, atol=1e-6)


def test_the_run_loader_carries_the_flips_and_flipped_modes_stay_as_they_are(tmp_path) -> None:
    keys = ["data.loader=synthetic", "data.synthetic_samples=8", "data.synthetic_image_size=16", "data.crop_size=16",
            "data.val_resize=16", "data.val_crop=16", "data.workers=0", f"run_dir={tmp_path}"]
    cfg = load_config("cifar10_resnet20", [*keys, "eval.flip_tta=true"])
    loader = build_val_loader(cfg, DistContext(), global_batch=4)
    batch = next(iter(loader))
    assert len(batch.views) == 2 and torch.equal(batch.views[1], batch.views[0].flip(3))
    assert len(loader) == 2
    # ten-crop holds its flips already (a checkpoint trained with flip_tta still evaluates R1's protocol)
    cfg = load_config("cifar10_resnet20", [*keys, "eval.flip_tta=true", "eval.mode=ten-crop", "data.val_crop=12"])
    assert len(next(iter(build_val_loader(cfg, DistContext(), global_batch=4))).views) == 10
