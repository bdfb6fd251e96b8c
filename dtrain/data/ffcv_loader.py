"""FFCV loaders over the prepared OUT/ffcv/{split}.beton (sample i of the .beton = manifest index i).

FFCV decodes and crops with its numba-compiled JPEG pipeline on CPU threads and copies the
uint8 batch to the device (ToDevice, ToTorchImage); normalisation and PCA lighting are one
batched multiply-add on the device (see below).

Sample order: the reference loader's (dtrain.data.sampling). A custom traversal order hands FFCV,
each epoch, this rank's slice of the seeded global permutation of (seed, epoch), from batch
`skip_batches` on; so the batches of (epoch, i) hold exactly the samples the torch loader's do,
every sample is used at most once per epoch across ranks, len(loader) is the reference count,
and a resumed run starts at the exact batch. This needs no process group (FFCV's own
distributed=True reads rank/world from torch.distributed and pads with duplicates, as
DistributedSampler does). Only FFCV's random crop and flip draws are its own (not bitwise the
torch loader's). Repeated augmentation (data.repeated_augment_reps) follows the same order,
its copies differing by FFCV's own draws. order="quasi_random" instead uses FFCV's QuasiRandom
order (for datasets larger than RAM, with os_cache=False) over a fixed seeded partition of the
samples per rank: still exactly once per epoch, not a global reshuffle (no repeated augmentation).

Augmentations: R1's scale_jitter (ScaleJitterRGBImageDecoder below: shorter side random in
data.scale_range, then a crop_size crop, as one crop-and-resize of the decoded image),
random_resized_crop (RandomResizedCropRGBImageDecoder), pad_crop and none (CenterCrop decoder).
pad_crop decodes the whole image (SimpleRGBImageDecoder) and pads, crops and flips on the device
after the normalisation (not FFCV's RandomTranslate, which pads the raw pixels): the padding is 0
in the network's input, as the papers' era code made it (dtrain.data.padding). Evaluation: center and
single-320 (CenterCrop decoder); ten-crop and multi-scale fall back to the torch loader over the
same prepared dataset (its webdataset shards), with a one-line notice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Imported only when data.loader=ffcv is chosen; without FFCV the ImportError reaches LOADERS'
# lookup in dtrain/data/__init__.py, which names the extra to install (dtrain/extras.py).
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import (
    CenterCropRGBImageDecoder,
    RandomResizedCropRGBImageDecoder,
    ResizedCropRGBImageDecoder,
    SimpleRGBImageDecoder,
)
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import RandomHorizontalFlip, Squeeze, ToDevice, ToTensor, ToTorchImage
from ffcv.traversal_order.base import TraversalOrder

from dtrain.config import DataConfig
from dtrain.data import LoaderBuilders  # the registry's entry type; the package never imports this module
from dtrain.errors import ConfigError
from dtrain_prep import layout

from .eval_fallback import with_torch_fallback
from .eval_views import R2_SINGLE_CROP
from .loaders import EvalBatch
from .padding import crop_windows, draw_windows
from .resolution import data_at_epoch, progressive
from .sampling import FFCV_ORDERS as ORDERS
from .sampling import EpochCursor, epoch_permutation, eval_assignment, mix_seed, train_order
from .sources import read_manifest
from .stats import build_normalize
from .transforms import LIGHTING_EIGVAL, LIGHTING_EIGVEC, check_train_geometry

BATCHES_AHEAD = 3  # batches FFCV prepares ahead of the training step


class _FixedOrder(TraversalOrder):
    """Whatever order `current` holds. FFCV 1.0.2 builds a custom order by calling the object
    given as `order` with the loader, so this instance returns itself."""

    def __init__(self, order: np.ndarray):  # noqa: D107 - TraversalOrder.__init__ needs a loader
        self.current = order

    def __call__(self, loader) -> _FixedOrder:
        return self

    def sample_order(self, epoch: int) -> np.ndarray:  # FFCV's Loader calls it each epoch (abstract in TraversalOrder)
        return self.current


def _beton(data: DataConfig, split: str) -> str:
    path = Path(data.root) / layout.ffcv_name(split)
    if not path.is_file():
        raise ConfigError(f"{path} is missing: prepare with --formats ffcv (pip install 'dtrain[ffcv]'), "
                          "or use data.loader=torch/dali")
    return str(path)


def _label_pipeline(device: torch.device) -> list:
    return [IntDecoder(), ToTensor(), Squeeze(), ToDevice(device, non_blocking=True)]


def _image_tail(device: torch.device) -> list:
    # uint8 to the device, then NCHW in channels_last memory (a view of the NHWC batch).
    return [ToTensor(), ToDevice(device, non_blocking=True), ToTorchImage(channels_last=True)]


def scale_jitter_crop(height, width, scale, ratio):
    """(top, left, h, w) of R1's scale augmentation in the decoded image's pixels: resizing the
    shorter side to s ~ U{low..high} and cropping `size` pixels is cropping a size * short / s
    square here and resizing it to size. `scale` carries (low, high, size); numba-compiled by FFCV."""
    s = np.random.randint(int(scale[0]), int(scale[1]) + 1)
    short = min(height, width)
    side = min(max(1, int(round(scale[2] * short / s))), short)
    i = int(np.random.uniform(0, height - side + 1))
    j = int(np.random.uniform(0, width - side + 1))
    return i, j, side, side


class ScaleJitterRGBImageDecoder(ResizedCropRGBImageDecoder):
    """FFCV decoder for R1's scale_jitter: a random crop_size view of the image rescaled to a random
    shorter side in [low, high] (the flip is FFCV's RandomHorizontalFlip after it)."""

    def __init__(self, size: int, low: int, high: int):
        super().__init__((size, size))
        self.scale = np.array([low, high, size], dtype=np.float64)
        self.ratio = np.array([1.0, 1.0])
        self.output_size = (size, size)

    @property
    def get_crop_generator(self):
        return scale_jitter_crop


def _train_decoder(data: DataConfig, widths: np.ndarray, heights: np.ndarray) -> list:
    size, augment = data.crop_size, data.train_augment
    if augment == "scale_jitter":
        ops = [ScaleJitterRGBImageDecoder(size, data.scale_range[0], data.scale_range[1])]
    elif augment == "random_resized_crop":
        ops = [RandomResizedCropRGBImageDecoder((size, size), scale=tuple(data.rrc_scale), ratio=tuple(data.rrc_ratio))]
    elif augment == "pad_crop":
        if progressive(data):  # the device-side crop of _DeviceNormalize has one size
            raise ConfigError("data.train_augment=pad_crop with data.loader=ffcv cannot change the crop size per "
                              "epoch (data.min_res/max_res); use data.loader=torch, gpu or synthetic")
        if not (np.all(widths == size) and np.all(heights == size)):
            raise ConfigError(f"data.train_augment=pad_crop with data.loader=ffcv needs every image to be "
                              f"{size}x{size} (crop_size); use data.loader=torch, gpu or dali for other sizes")
        return [SimpleRGBImageDecoder()]  # pad, crop and flip: _DeviceNormalize, after the normalisation
    elif augment == "none":
        return [CenterCropRGBImageDecoder((size, size), ratio=size / data.val_resize)]
    else:
        raise ConfigError(f"data.train_augment={augment} has no FFCV decoder; use scale_jitter, "
                          "random_resized_crop, pad_crop or none, or data.loader=dali / torch")
    return ops + ([RandomHorizontalFlip()] if data.flip else [])


class _DeviceNormalize:
    """uint8 NCHW (channels_last) batch on the device -> float32 normalised NCHW, with PCA lighting.

    FFCV has no lighting op, and its GPU NormalizeImage needs cupy and pytorch-pfn-extras; the
    reference loader's Normalize does both as one multiply-add on the device.
    """

    def __init__(self, data: DataConfig, seed: int, rank: int):
        self.normalize = build_normalize(data)
        self.data = data
        self.lighting_std, self.seed, self.rank = float(data.lighting_std), seed, rank

    def __call__(self, images: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        offsets = windows = None
        if self.lighting_std > 0:  # per-sample offsets, a function of (seed, epoch, batch, rank)
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch, batch, self.rank, 0xFFC7))
            alpha = torch.randn(images.shape[0], 3, generator=generator) * self.lighting_std
            offsets = (alpha * LIGHTING_EIGVAL) @ LIGHTING_EIGVEC.T
        pixels = images.permute(0, 2, 3, 1)
        if self.data.train_augment == "pad_crop":  # windows drawn on the CPU: no wait for the device
            d = self.data
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch, batch, self.rank, 0xFFC8))
            windows = draw_windows(generator, pixels.shape[0], pixels.shape[2], pixels.shape[1], max(d.pad, 0),
                                   d.crop_size, d.flip)
            pixels = crop_windows(pixels, windows, d.crop_size)
        return self.normalize(pixels, offsets, windows)


class _EpochResizer:
    """Progressive resizing (dtrain.data.resolution): before each epoch, the decoder takes the
    crop size, scale and ratio of that epoch's decoder, as FFCV's ImageNet example sets
    decoder.output_size each epoch. The Loader then reallocates its buffers to the new size and,
    built with recompile=True, recompiles the decoder, whose compiled code holds scale and ratio
    as constants (scale_jitter's crop size, the centre crop's ratio)."""

    PARAMETERS = ("output_size", "scale", "ratio")

    def __init__(self, data: DataConfig, widths: np.ndarray, heights: np.ndarray, decoder: Any):
        self.data, self.widths, self.heights, self.decoder = data, widths, heights, decoder

    def set_epoch(self, epoch: int) -> None:
        if not progressive(self.data):
            return
        resized = _train_decoder(data_at_epoch(self.data, epoch), self.widths, self.heights)[0]
        for name in self.PARAMETERS:
            setattr(self.decoder, name, getattr(resized, name))


class FfcvTrainLoader(EpochCursor):
    """The TrainLoader contract over an FFCV Loader; see the module docstring for the order."""

    def __init__(self, data: DataConfig, *, batch_size: int, rank: int, world_size: int, seed: int,
                 device: torch.device, num_classes: int = 1000, order: str | None = None,
                 os_cache: bool | None = None):
        order = order or data.ffcv_order
        os_cache = data.ffcv_os_cache if os_cache is None else os_cache
        if order not in ORDERS:
            raise ConfigError(f"FFCV order {order!r} is not one of {', '.join(ORDERS)}")
        self.repeats = data.repeated_augment_reps  # copies of a sample differ by FFCV's own random draws
        if self.repeats > 1 and order != "random":
            raise ConfigError(f"data.repeated_augment_reps={self.repeats} needs data.ffcv_order=random (dtrain's "
                              "sample order); FFCV's quasi_random order is its own")
        split = read_manifest(data.root, data.train_split)
        check_train_geometry(data, int(split.widths.min()), int(split.heights.min()))
        decoder = _train_decoder(data, split.widths, split.heights)
        self.resizer = _EpochResizer(data, split.widths, split.heights, decoder[0])
        self.num_samples = len(split)
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.batches = self.num_samples // (batch_size * world_size)
        if self.batches == 0:
            raise ConfigError(f"{self.num_samples} training samples make no global batch of "
                              f"{batch_size * world_size}; lower optim.batch_size")
        self.normalize = _DeviceNormalize(data, seed, rank)
        self.order = _FixedOrder(self._indices(0, 0))
        pipelines = {"image": decoder + _image_tail(device), "label": _label_pipeline(device)}
        common = dict(batch_size=batch_size, num_workers=max(1, data.workers), pipelines=pipelines,
                      drop_last=True, batches_ahead=BATCHES_AHEAD, recompile=progressive(data))
        if order == "random":
            self.loader = Loader(_beton(data, data.train_split), order=self.order, os_cache=os_cache, **common)
        else:
            # QuasiRandom reads in blocks of its own process cache: FFCV refuses it with os_cache.
            self.loader = Loader(_beton(data, data.train_split), order=OrderOption.QUASI_RANDOM, os_cache=False,
                                 indices=self._partition(), seed=mix_seed(seed, rank) % (1 << 31), **common)
        self.quasi_random = order == "quasi_random"

    def _indices(self, epoch: int, skip: int) -> np.ndarray:
        """This rank's samples of batches skip..len-1 of `epoch`, in the reference loader's order."""
        global_batch = self.batch_size * self.world_size
        order = train_order(self.num_samples, self.seed, epoch, repeats=self.repeats, world_size=self.world_size,
                            batch_size=self.batch_size)[0][: self.batches * global_batch]
        batches = order.view(self.batches, self.world_size, self.batch_size)[skip:, self.rank]
        return batches.reshape(-1).numpy().astype(np.uint64)

    def _partition(self) -> np.ndarray:
        """quasi_random: this rank's fixed share (a seeded permutation cut into world_size parts)."""
        share = self.batches * self.batch_size
        order = epoch_permutation(self.num_samples, self.seed, 0)
        return np.sort(order[self.rank * share:(self.rank + 1) * share].numpy()).astype(np.uint64)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, skip = self.epoch, self.skip
        self.skip = 0
        self.resizer.set_epoch(epoch)
        if self.quasi_random:  # FFCV's own order; skipped batches are read and dropped
            self.loader.next_epoch = epoch
            batches: Iterator[tuple[int, Any]] = (
                (i, b) for i, b in enumerate(self.loader) if skip <= i < self.batches)
        else:
            self.order.current = self._indices(epoch, skip)
            batches = enumerate(self.loader, start=skip)
        for index, (images, labels) in batches:
            # FFCV reuses its output buffers for later batches: copy the labels out.
            yield self.normalize(images, epoch, index), labels.view(-1).to(torch.int64, copy=True)


class FfcvEvalLoader:
    """The EvalLoader contract over FFCV: center and single-320 views.

    Samples are assigned to ranks exactly as the torch loader does (dtrain.data.sampling.
    eval_assignment: padded round-robin, padding flagged valid=False).
    """

    def __init__(self, data: DataConfig, *, mode: str, batch_size: int, rank: int, world_size: int,
                 scales: list[int], device: torch.device, num_classes: int = 1000):
        if mode == "center":
            if data.val_resize < data.val_crop:
                raise ConfigError(f"data.val_resize={data.val_resize} is smaller than data.val_crop="
                                  f"{data.val_crop}; make val_resize >= val_crop")
            decoder = CenterCropRGBImageDecoder((data.val_crop, data.val_crop), ratio=data.val_crop / data.val_resize)
        elif mode == "single-320":
            decoder = CenterCropRGBImageDecoder((R2_SINGLE_CROP, R2_SINGLE_CROP), ratio=1.0)
        else:
            raise ConfigError(f"eval.mode={mode} is not available with data.loader=ffcv (center, single-320); "
                              "use data.loader=torch or dali for it")
        self.num_samples = len(read_manifest(data.root, data.val_split))
        keys = eval_assignment(self.num_samples, rank, world_size)
        self.valid = torch.tensor([valid for _, valid in keys], dtype=torch.bool)
        self.batch_size, self.device = batch_size, device
        self.normalize = build_normalize(data)
        order = _FixedOrder(np.array([index for index, _ in keys], dtype=np.uint64))
        pipelines = {"image": [decoder] + _image_tail(device), "label": _label_pipeline(device)}
        self.loader = Loader(_beton(data, data.val_split), batch_size=batch_size, num_workers=max(1, data.workers),
                             order=order, pipelines=pipelines, drop_last=False, batches_ahead=BATCHES_AHEAD)

    def __len__(self) -> int:
        return -(-len(self.valid) // self.batch_size)

    def __iter__(self) -> Iterator[EvalBatch]:
        for index, (images, labels) in enumerate(self.loader):
            valid = self.valid[index * self.batch_size:(index + 1) * self.batch_size].to(self.device)
            yield EvalBatch([self.normalize(images.permute(0, 2, 3, 1))], labels.view(-1).to(torch.int64, copy=True),
                            valid)


def _builders():
    return LoaderBuilders(train=FfcvTrainLoader,
                          eval=with_torch_fallback("ffcv", ("center", "single-320"), FfcvEvalLoader))


BUILDERS = _builders()
