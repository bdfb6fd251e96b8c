"""data.loader=gpu: DataLoader workers read JPEG bytes (no decoding); the main process decodes
whole batches on the training device and augments them there.

Workers do what needs no pixels: read the bytes from the webdataset shards (or JPEG files),
draw each sample's augmentation from its (seed, epoch, index) generator using the manifest's
image size, and turn it into PIL's resampling coefficients. The device then decodes the batch
(torchvision.io.decode_jpeg: nvJPEG on CUDA; see gpu_decode for the CPU fallback), resamples,
crops, flips, adds the PCA lighting offset and normalises (data.normalize: per channel, or R1's
per-pixel mean image as the torch loader subtracts it), in the dtype and memory format asked for
(build_train's dtype / channels_last). Sharding, batch order and per-sample randomness are
TrainBatchSampler's, as in the torch loader, so a resumed run sees the same batches, and the
pixels are the torch loader's within one pixel level given the same JPEG decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from dtrain.config import DataConfig
from dtrain.data import LoaderBuilders
from dtrain_prep import layout

from .eval_views import EvalTransform
from .gpu_augment import FLIP, DeviceNormalize, TrainPlanner, build_device_normalize, eval_plans
from .gpu_decode import decode_batch, pick_decoder
from .gpu_prefetch import one_ahead
from .gpu_resample import pad_taps, plan_coefficients, resample, source_rows
from .loaders import EvalBatch, EvalLoader, TrainLoader, all_same_size, batch_data_loader
from .padding import stack_windows
from .sampling import EvalBatchSampler, TrainBatchSampler, sample_rng
from .sources import ManifestSource, read_manifest
from .transforms import check_train_geometry

Coefficients = tuple[np.ndarray, ...]  # plan_coefficients: x taps, x weights, y taps, y weights
# What a worker returns per sample: JPEG bytes, coefficients, flip, lighting offset, pad window, label, index
TrainSample = tuple[np.ndarray, Coefficients, bool, torch.Tensor, torch.Tensor | None, int, int]
# JPEG bytes, (coefficients, flip) per view, label, valid, index
EvalSample = tuple[np.ndarray, list[tuple[Coefficients, bool]], int, bool, int]
PlansOf = Callable[[int, int], list[list[int]]]  # width, height -> the plans of every view


def _jpeg(source: ManifestSource, index: int) -> np.ndarray:
    return np.frombuffer(source.read_bytes(index), dtype=np.uint8)


def _collate_jpegs(jpegs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """One buffer + lengths: a batch crosses from the worker as two tensors, not one per image."""
    lengths = torch.tensor([len(j) for j in jpegs], dtype=torch.int64)
    return torch.from_numpy(np.concatenate(jpegs)), lengths


def _split_jpegs(buffer: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(buffer, lengths.tolist()))


class _Taps:
    """Per-sample resampling taps of one view, stacked over a batch."""

    def __init__(self, per_sample: list[Coefficients]) -> None:
        self.rows = [source_rows(sample[2], sample[3]) for sample in per_sample]
        self.x_taps, self.x_weights, self.y_taps, self.y_weights = (
            pad_taps(list(a)) for a in zip(*per_sample, strict=True))

    def pixels(self, images: list[torch.Tensor], flips: torch.Tensor) -> torch.Tensor:
        """Decoded uint8 images -> float32 [B, C, Ly, Lx] pixel levels, flipped where asked."""
        device = images[0].device
        x_taps, x_weights, y_taps, y_weights = (t.to(device, non_blocking=True) for t in (
            self.x_taps, self.x_weights, self.y_taps, self.y_weights))
        out = torch.stack([resample(image, x_taps[i], x_weights[i], y_taps[i], y_weights[i], self.rows[i])
                           for i, image in enumerate(images)])
        mask = flips.to(device, non_blocking=True).view(-1, 1, 1, 1)
        return torch.where(mask, out.flip(3), out).float()


# A collated batch as it crosses from the workers: JPEG buffer, lengths, taps, flips, lighting
# offsets, pad windows (None: no padding), labels, indices.
TrainBatchParts = tuple[torch.Tensor, torch.Tensor, _Taps, torch.Tensor, torch.Tensor, torch.Tensor | None,
                        torch.Tensor, torch.Tensor]
# JPEG buffer, lengths, (taps, flips) per view, labels, valid, indices
EvalBatchParts = tuple[torch.Tensor, torch.Tensor, list[tuple[_Taps, torch.Tensor]], torch.Tensor, torch.Tensor,
                       torch.Tensor]


class _GpuTrainSamples(Dataset[TrainSample]):
    def __init__(self, source: ManifestSource, planner: TrainPlanner, seed: int) -> None:
        self.source, self.planner, self.seed = source, planner, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, ...]) -> TrainSample:
        epoch, index = key[:2]  # key: (epoch, index) or, with repeated augmentation, (epoch, index, copy)
        width, height = int(self.source.manifest.widths[index]), int(self.source.manifest.heights[index])
        plan, offset = self.planner(width, height, sample_rng(self.seed, *key), epoch)
        return _jpeg(self.source, index), plan_coefficients(plan, width, height), bool(plan[FLIP]), offset, \
            self.planner.window(plan), self.source.label(index), index


def _collate_train(items: Sequence[TrainSample]) -> TrainBatchParts:
    jpegs, taps, flips, offsets, windows, labels, indices = zip(*items, strict=True)
    return (*_collate_jpegs(list(jpegs)), _Taps(list(taps)), torch.tensor(flips), torch.stack(offsets),
            stack_windows(windows), torch.tensor(labels, dtype=torch.int64), torch.tensor(indices, dtype=torch.int64))


class SampleNames:
    """"split[index] (source file)" of a sample, for error messages; reads the source lazily."""

    def __init__(self, source: ManifestSource) -> None:
        self.root, self.split = source.manifest.root, source.manifest.split

    def __call__(self, index: int) -> str:
        try:
            table = pq.read_table(self.root / layout.MANIFEST, columns=["split", "index", "source"])
            rows = table.filter(pc.and_(pc.equal(table["split"], self.split), pc.equal(table["index"], index)))
            origin = f" ({rows['source'][0].as_py()})" if rows.num_rows else ""
        except Exception:  # the message must come out even if the manifest cannot be re-read
            origin = ""
        return f"{self.split}[{index}]{origin}"


class GpuTrainLoader(TrainLoader):
    """Batches (images in `dtype`, NCHW or channels_last, normalised; labels int64) on `device`;
    len/set_epoch/num_samples/epoch are TrainLoader's (over the same sampler)."""

    def __init__(self, source: ManifestSource, planner: TrainPlanner, normalize: DeviceNormalize, *,
                 batch_size: int, rank: int, world_size: int, seed: int, workers: int, device: torch.device,
                 decoder: str, repeats: int = 1) -> None:
        # Not TrainLoader.__init__: that one builds the PIL-decoding DataLoader.
        self.source, self.device, self.decoder, self.normalize = source, device, decoder, normalize
        self.names = SampleNames(source)
        self.sampler = TrainBatchSampler(len(source), batch_size, rank, world_size, seed, repeats)
        self.loader = batch_data_loader(_GpuTrainSamples(source, planner, seed), self.sampler, _collate_train,
                                   workers, device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return one_ahead(self.device, self.loader, self._batch)

    def _batch(self, batch: TrainBatchParts) -> tuple[torch.Tensor, torch.Tensor]:
        buffer, lengths, taps, flips, offsets, windows, labels, indices = batch
        images = decode_batch(self.decoder, _split_jpegs(buffer, lengths),
                              lambda i: self.names(int(indices[i])), self.device)
        non_blocking = self.device.type == "cuda"
        return self.normalize(taps.pixels(images, flips), offsets, windows), \
            labels.to(self.device, non_blocking=non_blocking)


class _GpuEvalSamples(Dataset[EvalSample]):
    def __init__(self, source: ManifestSource, plans_of: PlansOf) -> None:
        self.source, self.plans_of = source, plans_of

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, bool]) -> EvalSample:
        index, valid = key
        width, height = int(self.source.manifest.widths[index]), int(self.source.manifest.heights[index])
        plans = self.plans_of(width, height)
        views = [(plan_coefficients(p, width, height), bool(p[FLIP])) for p in plans]
        return _jpeg(self.source, index), views, self.source.label(index), valid, index


def _collate_eval(items: Sequence[EvalSample]) -> EvalBatchParts:
    jpegs, views, labels, valid, indices = zip(*items, strict=True)
    per_view = [(_Taps([v[i][0] for v in views]), torch.tensor([v[i][1] for v in views]))
                for i in range(len(views[0]))]
    return (*_collate_jpegs(list(jpegs)), per_view, torch.tensor(labels, dtype=torch.int64),
            torch.tensor(valid, dtype=torch.bool), torch.tensor(indices, dtype=torch.int64))


class GpuEvalLoader(EvalLoader):
    """EvalBatch(views, labels, valid) on `device`, the views of eval_views decoded and cut on the
    device; len/num_samples are EvalLoader's."""

    def __init__(self, source: ManifestSource, plans_of: PlansOf, normalize: DeviceNormalize, *, fixed_size: bool,
                 batch_size: int, rank: int, world_size: int, workers: int, device: torch.device,
                 decoder: str) -> None:
        self.source, self.device, self.decoder, self.normalize = source, device, decoder, normalize
        self.names = SampleNames(source)
        widths, heights = source.image_sizes()
        if not fixed_size and not all_same_size(widths.tolist(), heights.tolist()):
            batch_size = 1  # views follow each image's shape and cannot be stacked
        self.batch_size = batch_size
        self.sampler = EvalBatchSampler(len(source), batch_size, rank, world_size)
        self.loader = batch_data_loader(_GpuEvalSamples(source, plans_of), self.sampler, _collate_eval, workers, device)

    def __iter__(self) -> Iterator[EvalBatch]:
        return one_ahead(self.device, self.loader, self._batch)

    def _batch(self, batch: EvalBatchParts) -> EvalBatch:
        buffer, lengths, per_view, labels, valid, indices = batch
        images = decode_batch(self.decoder, _split_jpegs(buffer, lengths),
                              lambda i: self.names(int(indices[i])), self.device)
        views = [self.normalize(taps.pixels(images, flips)) for taps, flips in per_view]
        return EvalBatch(views, labels.to(self.device), valid.to(self.device))


class _EvalPlans:
    """width, height -> the plans of every view (a class, not a closure: workers may be spawned)."""

    def __init__(self, mode: str, data: DataConfig, scales: tuple[int, ...]) -> None:
        self.mode, self.data, self.scales = mode, data, scales

    def __call__(self, width: int, height: int) -> list[list[int]]:
        return eval_plans(self.mode, self.data, self.scales, width, height)


def _source(data: DataConfig, split: str) -> ManifestSource:
    return ManifestSource(read_manifest(data.root, split), data.source)


def build_train(data: DataConfig, *, batch_size: int, rank: int, world_size: int, seed: int, device: torch.device,
                num_classes: int = 1000, dtype: torch.dtype = torch.float32,
                channels_last: bool = False) -> GpuTrainLoader:
    """The registry's train builder; dtype/channels_last choose the output (AMP runs, benchmarks)."""
    source = _source(data, data.train_split)
    widths, heights = source.image_sizes()
    check_train_geometry(data, int(widths.min()), int(heights.min()))
    return GpuTrainLoader(source, TrainPlanner(data), build_device_normalize(data, dtype, channels_last),
                          batch_size=batch_size, rank=rank, world_size=world_size, seed=seed,
                          workers=data.workers, device=device, decoder=pick_decoder(data.gpu_decoder),
                          repeats=data.repeated_augment_reps)


def build_eval(data: DataConfig, *, mode: str, batch_size: int, rank: int, world_size: int, scales: Sequence[int],
               device: torch.device, num_classes: int = 1000, dtype: torch.dtype = torch.float32,
               channels_last: bool = False) -> GpuEvalLoader:
    EvalTransform(data, mode, scales)  # the same checks of eval.mode / eval.scales / val sizes
    plans = _EvalPlans(mode, data, tuple(int(s) for s in scales))
    return GpuEvalLoader(_source(data, data.val_split), plans,
                         build_device_normalize(data, dtype, channels_last),
                         fixed_size=mode != "multi-scale", batch_size=batch_size, rank=rank,
                         world_size=world_size, workers=data.workers, device=device,
                         decoder=pick_decoder(data.gpu_decoder))


BUILDERS = LoaderBuilders(train=build_train, eval=build_eval, formats=True)
