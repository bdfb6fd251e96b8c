"""Which samples each rank reads, batch by batch, and the seed of each sample's augmentation.

Training: each epoch one permutation of the split from a generator seeded by (seed, epoch).
Global batch i is positions [i*G, (i+1)*G) of it (G = batch_size * world_size); rank r takes
[i*G + r*B, i*G + (r+1)*B). The incomplete last global batch is dropped, so every rank has the
same number of batches and the used samples are covered exactly once, without overlap.

The samplers yield keys that carry everything a worker needs ((epoch, sample index) for
training), so batches do not depend on worker state: torch's DataLoader may run them in any
number of processes, and `skip_batches` only moves where the batch iterator starts.

Evaluation: the sample list is padded (repeating real samples, flagged invalid) to a multiple of
world_size and dealt round-robin, so every rank has the same number of batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from dtrain.errors import ConfigError, DtrainError

_SEED_MASK = (1 << 63) - 1
# data.ffcv_order: the orders dtrain/data/ffcv_loader.py implements (here, so that validation names
# them without importing FFCV): random = this module's epoch permutation, quasi_random = FFCV's own.
FFCV_ORDERS = ("random", "quasi_random")


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from a tuple of integers (numpy's SeedSequence hashing)."""
    words = np.random.SeedSequence([int(p) % (1 << 64) for p in parts]).generate_state(2, np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & _SEED_MASK


def sample_rng(seed: int, epoch: int, sample_index: int) -> np.random.Generator:
    """The generator of one sample's augmentation in one epoch."""
    return np.random.default_rng(mix_seed(seed, epoch, sample_index))


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator()
    generator.manual_seed(mix_seed(seed, epoch, 0x5EED))
    return torch.randperm(num_samples, generator=generator)


class EpochCursor:
    """len() and set_epoch() of a loader with a fixed number of batches per epoch (DALI, FFCV);
    the loader sets `batches` and reads `epoch` and `skip` when it iterates."""

    batches: int = 0
    epoch: int = 0
    skip: int = 0  # batches of the epoch to leave out (a run resumed mid-epoch)

    def __len__(self) -> int:
        return self.batches

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        if not 0 <= skip_batches <= self.batches:
            raise ConfigError(f"skip_batches={skip_batches} is outside 0..{self.batches} batches per epoch")
        self.epoch, self.skip = epoch, skip_batches


class TrainBatchSampler:
    """Yields, for this rank, lists of (epoch, sample index) keys, one list per batch."""

    def __init__(self, num_samples: int, batch_size: int, rank: int, world_size: int, seed: int):
        if not 0 <= rank < world_size:
            raise DtrainError(f"rank {rank} is outside world size {world_size}")
        if batch_size <= 0:
            raise DtrainError(f"batch size per process must be positive, got {batch_size}")
        global_batch = batch_size * world_size
        if num_samples < global_batch:
            raise DtrainError(
                f"the training split has {num_samples} samples, fewer than one global batch of "
                f"{global_batch} ({batch_size} x {world_size} processes); lower optim.batch_size")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        if not 0 <= skip_batches <= len(self):
            raise ConfigError(f"skip_batches={skip_batches} is outside 0..{len(self)} batches per epoch")
        self.epoch = epoch
        self.skip_batches = skip_batches

    def __len__(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def batch_indices(self, epoch: int, batch: int) -> list[int]:
        """Sample indices of batch `batch` of `epoch` on this rank."""
        order = epoch_permutation(self.num_samples, self.seed, epoch)
        return self._slice(order, batch).tolist()

    def _slice(self, order: torch.Tensor, batch: int) -> torch.Tensor:
        start = batch * self.batch_size * self.world_size + self.rank * self.batch_size
        return order[start:start + self.batch_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.epoch
        order = epoch_permutation(self.num_samples, self.seed, epoch)
        for batch in range(self.skip_batches, len(self)):
            yield [(epoch, int(i)) for i in self._slice(order, batch)]


def eval_assignment(num_samples: int, rank: int, world_size: int) -> list[tuple[int, bool]]:
    """(sample index, valid) for this rank: the list padded to a multiple of world_size, dealt
    round-robin; padding repeats real samples with valid=False so it is never counted."""
    if num_samples <= 0:
        raise DtrainError("the evaluation split has no samples")
    padded = -(-num_samples // world_size) * world_size
    return [(position % num_samples, position < num_samples) for position in range(rank, padded, world_size)]


class EvalBatchSampler:
    """Yields lists of (sample index, valid); the same number of batches on every rank."""

    def __init__(self, num_samples: int, batch_size: int, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise DtrainError(f"rank {rank} is outside world size {world_size}")
        if batch_size <= 0:
            raise DtrainError(f"eval batch size per process must be positive, got {batch_size}")
        self.keys = eval_assignment(num_samples, rank, world_size)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.keys) // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for start in range(0, len(self.keys), self.batch_size):
            yield self.keys[start:start + self.batch_size]
