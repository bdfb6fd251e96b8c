"""NVIDIA DALI loaders: prepared shards or JPEG files -> decode -> augment -> normalise.

On a GPU the JPEGs are decoded with `device="mixed"` (nvJPEG / the A100-H100 hardware decoder)
and every later operator runs on the GPU; without one the same graph runs on the CPU
(`device_id=None`), so tests and CPU users get the identical pipeline.

Sample order (training). Both readers shard the split with shard_id=rank, num_shards=world_size
and pad_last_batch=True; each epoch yields len(loader) = num_samples // (batch * world) batches,
the reference loader's count (DALI's shard may hold one batch more: it is run, not yielded).
  data.source=files   `fn.readers.file` over the manifest's JPEG files with shuffle_after_epoch:
                      one global permutation per epoch, each rank a disjoint slice of it, so
                      every sample is used at most once per epoch across ranks (the default to
                      use with DALI).
  data.source=shards  `fn.readers.webdataset` over the tars; it can only shuffle inside a buffer
                      (initial_fill), which is fine for shards written in random order and
                      useless for class-sorted ones: those are refused with a one-line error.
The file reader's labels are the samples' manifest indices (mapped to class labels on the
device), which also lets tests check exactly-once coverage.

Resume: DALI cannot seek inside an epoch, so set_epoch(epoch, skip_batches=k) runs the first k
batches and discards them; its shuffle is DALI's own (a function of the epochs run in this
process), so unlike the torch loader the order and the random augmentation of a resumed run are
not bitwise those of the uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

# Imported only when data.loader=dali is chosen; without DALI the ImportError reaches LOADERS'
# lookup in dtrain/data/__init__.py, which names the extra to install (dtrain/extras.py).
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.auto_aug import rand_augment, trivial_augment
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from dtrain.config import DataConfig
from dtrain.data import LoaderBuilders  # the registry's entry type; the package never imports this module
from dtrain.errors import ConfigError
from dtrain_prep import layout

from .auto_augment import NUM_MAGNITUDE_BINS, RandAugment, TrivialAugmentWide, parse_auto_augment
from .eval_fallback import refuse_per_pixel_mean, with_torch_fallback
from .loaders import EvalBatch
from .sampling import EpochCursor, mix_seed
from .sources import ManifestSplit, read_manifest
from .transforms import LIGHTING_EIGVAL, LIGHTING_EIGVEC, check_train_geometry

READER = "Reader"
SHUFFLE_BUFFER = 4096  # webdataset reader: samples held for shuffling (DALI's initial_fill)
# Ten-crop positions (relative x, y) of R1's 10-crop testing: four corners and the centre.
TEN_CROP_POSITIONS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.5))
# nvJPEG scratch sizes from NVIDIA's ResNet-50 example: ImageNet's largest images decode without
# re-allocation mid-epoch; hw_decoder_load splits work between A100/H100's JPEG engine and CUDA.
MIXED_DECODER_OPTIONS = dict(device_memory_padding=211_025_920, host_memory_padding=140_544_512,
                             hw_decoder_load=0.65)
OUTPUT_DTYPES = {torch.float32: types.FLOAT, torch.float16: types.FLOAT16}
# data.train_interpolation / val_interpolation -> DALI's filter (random per sample stays with the torch loader:
# transforms.INTERPOLATIONS names the loaders of each, and validation refuses the others).
DALI_INTERPOLATIONS = {"bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC}


def _interp(name: str):
    if name not in DALI_INTERPOLATIONS:
        raise ConfigError(f"interpolation {name} is not available with data.loader=dali (one of "
                          f"{', '.join(DALI_INTERPOLATIONS)}); use data.loader=torch")
    return DALI_INTERPOLATIONS[name]


def _device_id(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def _decoder_kwargs(device: torch.device) -> dict:
    if device.type == "cuda":
        return dict(device="mixed", output_type=types.RGB, **MIXED_DECODER_OPTIONS)
    return dict(device="cpu", output_type=types.RGB)


def _check_files(split: ManifestSplit) -> list[str]:
    paths = split.jpeg_paths.to_pylist()
    if "" in paths:
        raise ConfigError(f"split {split.split!r} of {split.root} has samples without a JPEG file; "
                          "use data.source=shards or re-run `dtrain prepare` with --formats filelist")
    return paths


def _read(data: DataConfig, split: ManifestSplit, *, shard_id: int, num_shards: int, shuffle: bool, seed: int):
    """(encoded JPEGs, int32 sample indices or labels) of one split; see the module docstring.

    Evaluation (shuffle=False) sticks to its shard: by default DALI readers move every rank to
    the next shard each epoch, which would change the valid/padding layout between passes.
    """
    if data.source == "files":
        return fn.readers.file(file_root=str(split.root), files=_check_files(split),
                               labels=list(range(len(split))), shard_id=shard_id, num_shards=num_shards,
                               shuffle_after_epoch=shuffle, pad_last_batch=True, stick_to_shard=not shuffle,
                               name=READER, seed=seed)
    if data.source != "shards":
        raise ConfigError(f"data.source={data.source!r} is not one of shards, files")
    shards = layout.shard_paths(split.root, split.split)
    if not shards or "" in split.shard_names:
        raise ConfigError(f"split {split.split!r} of {split.root} is not fully in webdataset shards; "
                          "use data.source=files or re-run `dtrain prepare`")
    labels = split.labels
    if shuffle and np.all(np.diff(labels) >= 0) and labels[0] != labels[-1]:
        raise ConfigError(f"the {split.split} shards of {split.root} are in class order, which DALI's buffered "
                          "webdataset shuffle cannot mix; use data.source=files with data.loader=dali")
    indexes = [p.with_suffix(".idx") for p in shards]
    index_paths = [str(p) for p in indexes] if all(p.is_file() for p in indexes) else None
    return fn.readers.webdataset(
        paths=[str(p) for p in shards], index_paths=index_paths, ext=[layout.EXT_JPEG, layout.EXT_LBL],
        dtypes=[types.UINT8, types.INT32], shard_id=shard_id, num_shards=num_shards, random_shuffle=shuffle,
        initial_fill=SHUFFLE_BUFFER, pad_last_batch=True, stick_to_shard=not shuffle, name=READER, seed=seed)


def _normalize_mean(data: DataConfig):
    """crop_mirror_normalize's `mean` in 0..255 units, with AlexNet PCA lighting folded in.

    DALI has no lighting operator. Lighting adds one RGB offset per image (eigvec @ (alpha *
    eigval), alpha ~ N(0, std)) before normalisation; subtracting it from the mean instead gives
    the same result inside the one fused crop/flip/normalise kernel (no extra pass over pixels).
    """
    mean = [255.0 * m for m in data.mean]
    if data.lighting_std <= 0:
        return mean
    alpha = fn.random.normal(shape=[1, 3], stddev=float(data.lighting_std))
    matrix = (LIGHTING_EIGVEC * LIGHTING_EIGVAL[None, :] * 255.0).flatten().tolist()
    offset = fn.reshape(fn.coord_transform(alpha, M=matrix, dtype=types.FLOAT), shape=[3])
    return types.Constant(np.asarray(mean, dtype=np.float32)) - offset


def _crop_mirror_normalize(images, data: DataConfig, mean, *, dtype, channels_last: bool, **kwargs):
    return fn.crop_mirror_normalize(images, mean=mean, std=[255.0 * s for s in data.std],
                                    dtype=OUTPUT_DTYPES[dtype], output_layout="HWC" if channels_last else "CHW",
                                    **kwargs)


def _train_images(jpegs, data: DataConfig, device: torch.device, *, dtype, channels_last: bool):
    """The augmentations of dtrain.data.transforms (same distributions, DALI's own random draws)."""
    size, augment = data.crop_size, data.train_augment
    decode = _decoder_kwargs(device)
    interp = _interp(data.train_interpolation)
    crop: dict = {}
    if augment == "random_resized_crop":
        # ROI decoding: only the crop window is decoded (docs/platform.md: the fastest CPU path measured).
        images = fn.decoders.image_random_crop(jpegs, random_area=list(data.rrc_scale),
                                               random_aspect_ratio=list(data.rrc_ratio), num_attempts=10, **decode)
        images = fn.resize(images, resize_x=size, resize_y=size, antialias=True, interp_type=interp)
    elif augment == "scale_jitter":
        low, high = data.scale_range
        shorter = fn.random.uniform(values=[float(s) for s in range(low, high + 1)])
        images = fn.resize(fn.decoders.image(jpegs, **decode), resize_shorter=shorter, antialias=True,
                           interp_type=interp)
        crop = dict(crop=(size, size), crop_pos_x=fn.random.uniform(range=[0.0, 1.0]),
                    crop_pos_y=fn.random.uniform(range=[0.0, 1.0]))
    elif augment == "pad_crop":
        if data.auto_augment != "none":
            raise ConfigError(f"data.auto_augment={data.auto_augment} with data.train_augment=pad_crop is not "
                              "available with data.loader=dali (it pads after normalising); use data.loader=torch")
        return _pad_crop_after_normalize(fn.decoders.image(jpegs, **decode), data, dtype=dtype,
                                         channels_last=channels_last)
    elif augment == "none":
        images = fn.resize(fn.decoders.image(jpegs, **decode), resize_shorter=float(data.val_resize), antialias=True,
                           interp_type=interp)
        crop = dict(crop=(size, size))
    else:
        raise ConfigError(f"data.train_augment={augment!r} is not one of random_resized_crop, scale_jitter, "
                          "pad_crop, none")
    if data.auto_augment != "none":  # on the uint8 crop, as the torch loader (the flip follows: same distribution)
        images, crop = _auto_augment(fn.crop(images, **crop) if crop else images, data), {}
    mirror = fn.random.coin_flip() if data.flip else 0
    return _crop_mirror_normalize(images, data, _normalize_mean(data), mirror=mirror, dtype=dtype,
                                  channels_last=channels_last, **crop)


def _auto_augment(images, data: DataConfig):
    """data.auto_augment with DALI's auto_aug ops (the papers' op lists, 31 magnitude bins; DALI's own
    draws), set as the torch loader's (dtrain.data.auto_augment): black fill, bilinear resampling,
    TrivialAugment-wide's 32-pixel and RandAugment's 150/331-of-the-image translations."""
    augment = parse_auto_augment(data.auto_augment)
    common = dict(num_magnitude_bins=NUM_MAGNITUDE_BINS, fill_value=0, interp_type=types.INTERP_LINEAR)
    if isinstance(augment, TrivialAugmentWide):
        return trivial_augment.trivial_augment_wide(images, max_translate_abs=32, **common)
    if isinstance(augment, RandAugment):
        return rand_augment.rand_augment(images, n=augment.num_ops, m=augment.magnitude, **common,
                                         shape=(data.crop_size, data.crop_size), max_translate_rel=150.0 / 331.0)
    raise ConfigError(f"data.auto_augment={data.auto_augment} (timm's RandAugment) is not available with "
                      "data.loader=dali; use data.loader=torch or synthetic, or ra-mM (torchvision's)")


def _pad_crop_after_normalize(images, data: DataConfig, *, dtype, channels_last: bool):
    """The CIFAR pad-and-crop in the papers' order (dtrain.data.padding): normalise (and flip) the
    whole image, then a crop_size window anchored in [-pad, pad] around it, zero outside, so the
    padding is 0 in the network's input. (Flipping before the crop instead of after it gives the same
    distribution: the anchors are symmetric.)"""
    mirror = fn.random.coin_flip() if data.flip else 0
    images = _crop_mirror_normalize(images, data, _normalize_mean(data), mirror=mirror, dtype=dtype,
                                    channels_last=channels_last)
    size = float(data.crop_size)
    anchor = fn.random.uniform(values=[float(v) for v in range(-data.pad, data.pad + 1)], shape=[2])
    return fn.slice(images, anchor, types.Constant(np.array([size, size], dtype=np.float32)),
                    axis_names="WH", normalized_anchor=False, normalized_shape=False,
                    out_of_bounds_policy="pad", fill_values=0)


def _as_nchw(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    # HWC output viewed as NCHW: the shape of the contract in channels_last memory, without a copy.
    return images.permute(0, 3, 1, 2) if channels_last else images


class DaliTrainLoader(EpochCursor):
    """The TrainLoader contract (see dtrain.data) over a DALI pipeline.

    dtype (float32 | float16) and channels_last choose the output (for AMP runs and benchmarks);
    the default is the contract's float32 NCHW.
    """

    def __init__(self, data: DataConfig, *, batch_size: int, rank: int, world_size: int, seed: int,
                 device: torch.device, num_classes: int = 1000, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False):
        if dtype not in OUTPUT_DTYPES:
            raise ConfigError(f"DALI loader output dtype {dtype} is not one of float32, float16")
        refuse_per_pixel_mean(data, "dali")
        if data.repeated_augment_reps > 1:  # DALI's readers shuffle and shard themselves
            raise ConfigError(f"data.loader=dali cannot repeat samples (data.repeated_augment_reps="
                              f"{data.repeated_augment_reps}); the torch, gpu and ffcv loaders can")
        if data.min_res is not None or data.max_res is not None:  # the pipeline's crop size is fixed when built
            raise ConfigError("data.loader=dali cannot change the crop size per epoch (data.min_res/max_res); the "
                              "torch, gpu, synthetic and ffcv loaders can")
        split = read_manifest(data.root, data.train_split)
        check_train_geometry(data, int(split.widths.min()), int(split.heights.min()))
        self.num_samples = len(split)
        self.batch_size, self.world_size = batch_size, world_size
        self.batches = self.num_samples // (batch_size * world_size)
        if self.batches == 0:
            raise ConfigError(f"{self.num_samples} training samples make no global batch of "
                              f"{batch_size * world_size}; lower optim.batch_size")
        self.device, self.channels_last = device, channels_last
        self.by_index = data.source == "files"  # the reader yields sample indices, not labels
        self.label_of = torch.as_tensor(split.labels, dtype=torch.int64, device=device)
        self._mid_epoch = False  # an earlier iteration stopped before DALI's epoch ended

        # Augmentation streams differ per rank; the reader's shuffle seed is shared by all ranks
        # (one global permutation per epoch).
        @pipeline_def(batch_size=batch_size, num_threads=max(1, data.workers), device_id=_device_id(device),
                      seed=mix_seed(seed, rank, 0xDA11) % (1 << 31), prefetch_queue_depth=2,
                      enable_conditionals=data.auto_augment != "none")  # DALI's auto_aug ops branch per sample
        def pipeline():
            jpegs, labels = _read(data, split, shard_id=rank, num_shards=world_size, shuffle=True,
                                  seed=mix_seed(seed, 0xDA11) % (1 << 31))
            images = _train_images(jpegs, data, device, dtype=dtype, channels_last=channels_last)
            return images, labels.gpu() if device.type == "cuda" else labels

        self.pipe = pipeline()
        self.pipe.build()
        self.iterator = DALIGenericIterator(self.pipe, ["images", "labels"], reader_name=READER, auto_reset=True,
                                            last_batch_policy=LastBatchPolicy.DROP)

    def iter_with_indices(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """(images, labels, manifest sample indices or None for data.source=shards) per batch."""
        if self._mid_epoch:  # DALI cannot reset mid-epoch: finish the abandoned one first
            for _ in self.iterator:
                pass
        self._mid_epoch = True
        skip, self.skip = self.skip, 0
        for index, outputs in enumerate(self.iterator):
            if skip <= index < self.batches:
                images, read = outputs[0]["images"], outputs[0]["labels"].view(-1).long()
                indices = read if self.by_index else None
                labels = self.label_of[read] if self.by_index else read
                yield _as_nchw(images, self.channels_last), labels, indices
        self._mid_epoch = False

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, _ in self.iter_with_indices():
            yield images, labels


def _shard_bounds(num_samples: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """DALI's reader shard [begin, end) of the samples (ShardBegin/ShardEnd in DALI's loader.h)."""
    return num_samples * shard_id // num_shards, num_samples * (shard_id + 1) // num_shards


class DaliEvalLoader:
    """The EvalLoader contract over DALI: centre / single-320 crops and R1's ten crops.

    The reader reads the split in order, rank r its shard [begin_r, end_r); the last batch is
    padded (valid=False) and a rank whose shard needs fewer batches than the largest one gets
    all-invalid batches, so every rank runs the same number of batches. Multi-scale (whole
    images of different sizes) stays with the torch loader.
    """

    def __init__(self, data: DataConfig, *, mode: str, batch_size: int, rank: int, world_size: int,
                 scales: list[int], device: torch.device, num_classes: int = 1000):
        if mode not in ("center", "single-320", "ten-crop"):
            raise ConfigError(f"eval.mode={mode} is not available with data.loader=dali; use data.loader=torch")
        refuse_per_pixel_mean(data, "dali")
        if mode != "single-320" and data.val_resize < data.val_crop:
            raise ConfigError(f"data.val_resize={data.val_resize} is smaller than data.val_crop={data.val_crop}; "
                              "make val_resize >= val_crop")
        resize, crop = (320, 320) if mode == "single-320" else (data.val_resize, data.val_crop)
        interp = _interp(data.val_interpolation)
        positions = TEN_CROP_POSITIONS if mode == "ten-crop" else ((0.5, 0.5),)
        split = read_manifest(data.root, data.val_split)
        self.num_samples = len(split)
        self.device, self.batch_size = device, batch_size
        self.by_index = data.source == "files"
        self.label_of = torch.as_tensor(split.labels, dtype=torch.int64, device=device)
        begin, end = _shard_bounds(self.num_samples, rank, world_size)
        self.shard_size = end - begin
        self.batches = max(-(-(b - a) // batch_size)
                           for a, b in (_shard_bounds(self.num_samples, r, world_size) for r in range(world_size)))

        @pipeline_def(batch_size=batch_size, num_threads=max(1, data.workers), device_id=_device_id(device), seed=0)
        def pipeline():
            jpegs, labels = _read(data, split, shard_id=rank, num_shards=world_size, shuffle=False, seed=0)
            images = fn.resize(fn.decoders.image(jpegs, **_decoder_kwargs(device)), resize_shorter=float(resize),
                               antialias=True, interp_type=interp)
            views = []
            for mirror in ((0, 1) if mode == "ten-crop" else (0,)):
                for x, y in positions:
                    views.append(_crop_mirror_normalize(images, data, [255.0 * m for m in data.mean],
                                                        crop=(crop, crop), crop_pos_x=x, crop_pos_y=y,
                                                        mirror=mirror, dtype=torch.float32, channels_last=False))
            return (*views, labels.gpu() if device.type == "cuda" else labels)

        self.pipe = pipeline()
        self.pipe.build()
        self.num_views = len(positions) * (2 if mode == "ten-crop" else 1)
        names = [f"view{i}" for i in range(self.num_views)] + ["labels"]
        # FILL: the last batch keeps its padding (marked invalid below) so its size is batch_size.
        self.iterator = DALIGenericIterator(self.pipe, names, reader_name=READER, auto_reset=True,
                                            last_batch_policy=LastBatchPolicy.FILL)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[EvalBatch]:
        batch = None
        for index, outputs in enumerate(self.iterator):
            out = outputs[0]
            read = out["labels"].view(-1).long()
            labels = self.label_of[read] if self.by_index else read
            position = index * self.batch_size + torch.arange(len(labels), device=labels.device)
            batch = EvalBatch([out[f"view{i}"] for i in range(self.num_views)], labels, position < self.shard_size)
            yield batch
        for _ in range(self.batches - -(-self.shard_size // self.batch_size)):
            assert batch is not None, "a shard shorter than the longest one still holds a batch to pad with"
            yield EvalBatch(batch.views, batch.labels, torch.zeros_like(batch.valid))


def _builders():
    return LoaderBuilders(train=DaliTrainLoader,
                          eval=with_torch_fallback("dali", ("center", "single-320", "ten-crop"), DaliEvalLoader))


BUILDERS = _builders()
