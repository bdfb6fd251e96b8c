"""Progressive resizing: the side of the training crop as a pure function of the epoch.

The rule is FFCV's ImageNet example's (libffcv/ffcv-imagenet, train_imagenet.py,
ImageNetTrainer.get_resolution), copied exactly: min_res up to and including epoch start_ramp,
max_res from epoch end_ramp on, in between the linear interpolation rounded (NumPy's round, half
to even) to the nearest multiple of 32. Epochs count from 0, as there. Being a function of the
epoch alone, a run resumed in the middle of an epoch crops at the size the uninterrupted run did;
the loaders read the epoch from each sample's key (dtrain.data.sampling), so persistent worker
processes need no message when it changes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dtrain.config import DataConfig

RES_MULTIPLE = 32  # FFCV's get_resolution rounds the ramp to multiples of 32


def progressive(data: DataConfig) -> bool:
    return data.min_res is not None and data.max_res is not None


def ramp_resolution(epoch: int, min_res: int, max_res: int, start_ramp: int, end_ramp: int) -> int:
    """FFCV's get_resolution(epoch) for resolution.{min_res, max_res, start_ramp, end_ramp}."""
    if epoch <= start_ramp:
        return min_res
    if epoch >= end_ramp:
        return max_res
    interp = np.interp([epoch], [start_ramp, end_ramp], [min_res, max_res])
    return int(np.round(interp[0] / RES_MULTIPLE)) * RES_MULTIPLE


def train_crop_size(data: DataConfig, epoch: int) -> int:
    """The training crop side of `epoch`: the ramp's with min_res/max_res set, else data.crop_size."""
    if data.min_res is None or data.max_res is None:
        return data.crop_size
    return ramp_resolution(epoch, data.min_res, data.max_res, data.start_ramp, data.end_ramp)


def largest_train_crop(data: DataConfig) -> int:
    """The largest crop of any epoch (what the geometry checks must fit): rounding inside the ramp
    can pass max_res by up to 16 pixels."""
    if data.min_res is None or data.max_res is None:
        return data.crop_size
    ramp = range(data.start_ramp, max(data.start_ramp, data.end_ramp) + 1)
    return max(ramp_resolution(epoch, data.min_res, data.max_res, data.start_ramp, data.end_ramp) for epoch in ramp)


def data_at_epoch(data: DataConfig, epoch: int) -> DataConfig:
    """`data` with crop_size set to the epoch's training crop (the same object when it is unchanged)."""
    size = train_crop_size(data, epoch)
    return data if size == data.crop_size else dataclasses.replace(data, crop_size=size)
