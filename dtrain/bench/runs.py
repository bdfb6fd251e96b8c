"""The four benchmarks: loaders, model, end-to-end, framework overhead."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from dtrain import models
from dtrain.config import DataConfig
from dtrain.data import build_train_loader
from dtrain.data.gpu_defaults import batch_format
from dtrain.errors import ConfigError

from .timing import Measurement, measure

AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Timing:
    warmup: int = 5
    iterations: int = 20
    repeats: int = 3


@dataclass(frozen=True)
class ModelSetup:
    name: str = "resnet50"
    batch_size: int = 256
    amp: str = "none"  # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    num_classes: int = 1000
    image_size: int = 224

    def details(self) -> dict:
        """What a measurement records of the setup (num_classes and batch size are recorded apart)."""
        return dict(model=self.name, amp=self.amp, channels_last=self.channels_last, compile=self.compile,
                    image_size=self.image_size)


def _endless(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def loader_config(root: str, name: str, *, source: str, augment: str, crop: int, workers: int) -> DataConfig:
    return DataConfig(root=root, loader=name, source=source, train_augment=augment, crop_size=crop,
                      workers=workers, scale_range=[crop + crop // 7, 2 * crop + crop // 7])


def bench_loaders(configs: list[DataConfig], *, batch_size: int, device: torch.device,
                  timing: Timing) -> list[Measurement]:
    """Loader-only img/s of several loaders, one after the other, each alone on the machine.

    Not round-robin: an idle loader keeps refilling its prefetch queue (torch: 2 batches per
    worker, DALI: 2, FFCV: 3) in the background of the next one's timing, and starts its own
    timed repeat with that queue full. Each loader is dropped before the next is built.
    """
    results = []
    for data in configs:
        loader = build_train_loader(data, batch_size=batch_size, rank=0, world_size=1, seed=0, device=device)
        batches = _endless(loader)
        result = measure(f"loader:{data.loader}", partial(next, batches), batch_size=batch_size, device=device,
                         warmup=timing.warmup, iterations=timing.iterations, repeats=timing.repeats,
                         workers=data.workers, augment=data.train_augment, source=data.source, crop=data.crop_size)
        result.details["images_per_s_per_worker"] = round(result.images_per_s / max(1, data.workers), 1)
        results.append(result)
        del batches, loader  # stops its workers/threads before the next loader is timed
        gc.collect()
    return results


class TrainStep:
    """fwd + bwd + SGD step of one model on one device, as a bare loop writes it."""

    def __init__(self, setup: ModelSetup, device: torch.device):
        if setup.amp != "none" and device.type != "cuda":
            raise ConfigError(f"--amp {setup.amp} needs a CUDA device; use --amp none on CPU")
        torch.manual_seed(0)
        self.model = models.build(setup.name, num_classes=setup.num_classes).to(device)
        if setup.channels_last:
            # Module.to takes memory_format= (torch's docs); its type overloads leave it out.
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.forward = torch.compile(self.model) if setup.compile else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler("cuda") if setup.amp == "fp16" else None
        self.setup, self.device = setup, device

    def autocast(self):
        dtype = AMP[self.setup.amp]
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if self.setup.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            loss = F.cross_entropy(self.forward(images).float(), labels)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def synthetic_batch(setup: ModelSetup, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(setup.batch_size, 3, setup.image_size, setup.image_size, generator=generator)
    labels = torch.randint(0, setup.num_classes, (setup.batch_size,), generator=generator)
    return images.to(device), labels.to(device)


def bench_model(setup: ModelSetup, device: torch.device, timing: Timing) -> Measurement:
    step, (images, labels) = TrainStep(setup, device), synthetic_batch(setup, device)
    return measure("model", lambda: step(images, labels), batch_size=setup.batch_size, device=device,
                   warmup=timing.warmup, iterations=timing.iterations, repeats=timing.repeats, **setup.details())


def bench_end_to_end(setup: ModelSetup, data: DataConfig, device: torch.device, timing: Timing) -> Measurement:
    step = TrainStep(setup, device)  # refuses --amp off CUDA first
    fmt = batch_format(setup.amp, setup.channels_last, device)  # as `dtrain train` builds its loader
    loader = build_train_loader(data, batch_size=setup.batch_size, rank=0, world_size=1, seed=0, device=device,
                                num_classes=setup.num_classes, dtype=fmt.dtype, channels_last=fmt.channels_last)
    batches = _endless(loader)

    def run() -> None:
        images, labels = next(batches)
        step(images.to(device, non_blocking=True), labels.to(device, non_blocking=True))

    return measure(f"e2e:{data.loader}", run, batch_size=setup.batch_size, device=device, warmup=timing.warmup,
                   iterations=timing.iterations, repeats=timing.repeats, loader=data.loader,
                   workers=data.workers, augment=data.train_augment, **setup.details())
