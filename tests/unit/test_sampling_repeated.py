"""Repeated augmentation (data.repeated_augment_reps): TrainBatchSampler's repeated order."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from dtrain.config import DataConfig
from dtrain.data import build_train_loader
from dtrain.data.sampling import TrainBatchSampler, epoch_permutation, sample_rng
from dtrain.errors import ConfigError
from dtrain.resolve import load_config

SAMPLES, SEED, EPOCH = 1000, 5, 2


def epoch_keys(world: int, batch: int, reps: int, skip: int = 0) -> list[list[tuple[int, ...]]]:
    """Every rank's keys of the epoch, in order."""
    ranks = []
    for rank in range(world):
        sampler = TrainBatchSampler(SAMPLES, batch, rank, world, SEED, repeats=reps)
        sampler.set_epoch(EPOCH, skip_batches=skip)
        ranks.append([key for keys in sampler for key in keys])
    return ranks


@pytest.mark.parametrize("world, batch, reps", [(1, 32, 2), (2, 16, 3), (4, 8, 3), (4, 12, 4), (8, 4, 2)])
def test_each_sample_comes_reps_times_per_epoch_and_every_rank_the_same_count(world: int, batch: int,
                                                                               reps: int) -> None:
    ranks = epoch_keys(world, batch, reps)
    global_batch = world * batch
    used = SAMPLES // global_batch * global_batch
    assert {len(keys) for keys in ranks} == {used // world}  # every rank the same count; the epoch's length kept
    counts = Counter(index for keys in ranks for _, index, _ in keys)
    assert sum(counts.values()) == used
    short = [n for n in counts.values() if n != reps]
    assert len(short) <= 1 and all(n < reps for n in short)  # only the epoch's last sample may be cut
    assert set(counts) == set(epoch_permutation(SAMPLES, SEED, EPOCH)[: len(counts)].tolist())
    copies = Counter((index, copy) for keys in ranks for _, index, copy in keys)
    assert max(copies.values()) == 1  # each copy once: its own augmentation seed


@pytest.mark.parametrize("world, batch, reps", [(4, 8, 3), (4, 8, 4), (8, 4, 2)])
def test_the_copies_of_a_sample_go_to_different_ranks(world: int, batch: int, reps: int) -> None:
    """RASampler's point: each process sees its own augmentation of the sample."""
    ranks = epoch_keys(world, batch, reps)
    where: dict[int, set[int]] = {}
    for rank, keys in enumerate(ranks):
        for _, index, _ in keys:
            where.setdefault(index, set()).add(rank)
    counts = Counter(index for keys in ranks for _, index, _ in keys)
    assert all(len(where[index]) == counts[index] for index in counts)


def test_reps_1_is_the_plain_order_and_copies_are_seeded_apart() -> None:
    plain = TrainBatchSampler(SAMPLES, 16, 1, 2, SEED)
    one = TrainBatchSampler(SAMPLES, 16, 1, 2, SEED, repeats=1)
    for sampler in (plain, one):
        sampler.set_epoch(EPOCH)
    assert list(plain) == list(one) and all(len(key) == 2 for key in next(iter(one)))
    draws = {copy: sample_rng(SEED, EPOCH, 3, copy).random() for copy in range(3)}
    assert len(set(draws.values())) == 3 and draws[0] == sample_rng(SEED, EPOCH, 3).random()


def test_a_resumed_epoch_continues_the_repeated_order() -> None:
    whole = epoch_keys(2, 8, 3)
    resumed = epoch_keys(2, 8, 3, skip=5)
    assert all(tail == keys[5 * 8:] for tail, keys in zip(resumed, whole, strict=True))


def test_the_torch_loader_augments_each_copy_differently() -> None:
    data = DataConfig(loader="synthetic", synthetic_samples=16, synthetic_image_size=16, crop_size=12,
                      train_augment="random_resized_crop", workers=0, repeated_augment_reps=2)
    loader = build_train_loader(data, batch_size=4, rank=0, world_size=1, seed=SEED, num_classes=4)
    loader.set_epoch(0)
    images = torch.cat([batch for batch, _ in loader])
    keys = [key for keys in loader.sampler for key in keys]
    first: dict[int, int] = {}
    for position, (_, index, _) in enumerate(keys):
        if index in first:
            assert not torch.equal(images[position], images[first[index]])
        first.setdefault(index, position)
    assert len(first) < len(keys)  # there were copies


@pytest.mark.parametrize("overrides, words", [
    (["data.repeated_augment_reps=0"], "must be at least 1"),
    (["data.repeated_augment_reps=3", "data.loader=dali"], "needs a loader that reads dtrain's sample order"),
    (["data.repeated_augment_reps=3", "data.loader=ffcv", "data.ffcv_order=quasi_random"], "ffcv with "
                                                                                          "data.ffcv_order=random"),
])
def test_loaders_that_order_samples_themselves_refuse_repeats(overrides: list[str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_config("cifar10_resnet20", overrides)
