"""An elastic job that loses a host mid-epoch keeps the global batch: every sample of the epoch is
still read exactly once across the change (the cluster lab's `elastic` fault runs it on hosts)."""

from __future__ import annotations

from collections import Counter

import pytest

from dtrain.data.sampling import TrainBatchSampler, epoch_permutation

SAMPLES, GLOBAL_BATCH, SEED, EPOCH = 1438, 48, 7, 3


def keys_read(world: int, skip: int, stop: int | None = None) -> list[int]:
    read = []
    for rank in range(world):
        sampler = TrainBatchSampler(SAMPLES, GLOBAL_BATCH // world, rank, world, SEED)
        sampler.set_epoch(EPOCH, skip_batches=skip)
        for index, batch in enumerate(sampler):
            if stop is not None and skip + index >= stop:
                break
            read += [sample for epoch, sample in batch if epoch == EPOCH]
    return read


@pytest.mark.parametrize("before, after", [(4, 3), (4, 2), (3, 4)])
def test_every_sample_once_when_the_world_changes_mid_epoch(before: int, after: int) -> None:
    batches = SAMPLES // GLOBAL_BATCH
    change = 11  # the global batch the resumed, resized job starts at (its checkpoint's position)
    read = keys_read(before, 0, stop=change) + keys_read(after, change)
    counts = Counter(read)
    assert max(counts.values()) == 1
    used = set(epoch_permutation(SAMPLES, SEED, EPOCH)[: batches * GLOBAL_BATCH].tolist())
    assert set(counts) == used
