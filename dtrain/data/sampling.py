"""Which samples each rank reads, batch by batch, and the seed of each sample's augmentation.

Training: each epoch one permutation of the split from a generator seeded by (seed, epoch).
Global batch i is positions [i*G, (i+1)*G) of it (G = batch_size * world_size); rank r takes
[i*G + r*B, i*G + (r+1)*B). The incomplete last global batch is dropped, so every rank has the
same number of batches and the used samples are covered exactly once, without overlap.

The samplers yield keys that carry everything a worker needs ((epoch, sample index) for
training), so batches do not depend on worker state: torch's DataLoader may run them in any
number of processes, and `skip_batches` only moves where the batch iterator starts.

Repeated augmentation (data.repeated_augment_reps = R > 1; Hoffer et al. 2020, "Augment your
batch", and DeiT's RASampler as torchvision's references/classification use it): the epoch keeps
its length, but it is made of the first ceil(used / R) samples of the permutation, each R times;
consecutive copies go to consecutive ranks of the same global batch (RASampler deals them
round-robin), so each process augments its copy differently. A copy is keyed (epoch, index, copy)
and its augmentation seeded by all three; copy 0 is seeded as a plain sample is. Like the plain
order it is a function of (seed, epoch) alone: the checkpoint's (epoch, batches done) resumes it.

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


def sample_rng(seed: int, epoch: int, sample_index: int, copy: int = 0) -> np.random.Generator:
    """The generator of one sample's augmentation in one epoch (`copy`: its repeat, repeated augmentation)."""
    parts = (seed, epoch, sample_index) if copy == 0 else (seed, epoch, sample_index, copy)
    return np.random.default_rng(mix_seed(*parts))


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator()
    generator.manual_seed(mix_seed(seed, epoch, 0x5EED))
    return torch.randperm(num_samples, generator=generator)


def repeated_order(num_samples: int, seed: int, epoch: int, *, repeats: int, world_size: int,
                   batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample index, copy number) at each position of a repeated-augmentation epoch (see the module
    docstring): the batches the epoch uses, laid out so that rank r's slice [i*G + r*B, i*G + (r+1)*B)
    of global batch i holds RASampler's positions r, r + W, r + 2W, ... of the repeated list."""
    global_batch = batch_size * world_size
    batches = num_samples // global_batch
    used = batches * global_batch
    distinct = -(-used // repeats)
    indices = epoch_permutation(num_samples, seed, epoch)[:distinct].repeat_interleave(repeats)[:used]
    copies = torch.arange(repeats).repeat(distinct)[:used]

    def dealt(listed: torch.Tensor) -> torch.Tensor:  # listed[(i*B + p)*W + r] -> position i*G + r*B + p
        return listed.view(batches, batch_size, world_size).permute(0, 2, 1).reshape(-1)

    return dealt(indices), dealt(copies)


def train_order(num_samples: int, seed: int, epoch: int, *, repeats: int = 1, world_size: int = 1,
                batch_size: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The epoch's sample index at each position (and the copy numbers when repeats > 1), the order
    every loader that follows dtrain's sampling slices (the torch, gpu and FFCV loaders)."""
    if repeats == 1:
        return epoch_permutation(num_samples, seed, epoch), None
    return repeated_order(num_samples, seed, epoch, repeats=repeats, world_size=world_size, batch_size=batch_size)


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
    """Yields, for this rank, lists of (epoch, sample index) keys, one list per batch; with
    repeats > 1 (repeated augmentation), (epoch, sample index, copy) keys."""

    def __init__(self, num_samples: int, batch_size: int, rank: int, world_size: int, seed: int,
                 repeats: int = 1):
        if not 0 <= rank < world_size:
            raise DtrainError(f"rank {rank} is outside world size {world_size}")
        if batch_size <= 0:
            raise DtrainError(f"batch size per process must be positive, got {batch_size}")
        global_batch = batch_size * world_size
        if num_samples < global_batch:
            raise DtrainError(
                f"the training split has {num_samples} samples, fewer than one global batch of "
                f"{global_batch} ({batch_size} x {world_size} processes); lower optim.batch_size")
        if repeats < 1:
            raise ConfigError(f"data.repeated_augment_reps must be at least 1, got {repeats}")
        self.repeats = repeats
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

    def _order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return train_order(self.num_samples, self.seed, epoch, repeats=self.repeats, world_size=self.world_size,
                           batch_size=self.batch_size)

    def batch_indices(self, epoch: int, batch: int) -> list[int]:
        """Sample indices of batch `batch` of `epoch` on this rank."""
        return self._slice(self._order(epoch)[0], batch).tolist()

    def _slice(self, order: torch.Tensor, batch: int) -> torch.Tensor:
        start = batch * self.batch_size * self.world_size + self.rank * self.batch_size
        return order[start:start + self.batch_size]

    def __iter__(self) -> Iterator[list[tuple[int, ...]]]:
        epoch = self.epoch
        order, copies = self._order(epoch)
        for batch in range(self.skip_batches, len(self)):
            indices = self._slice(order, batch).tolist()
            if copies is None:
                yield [(epoch, i) for i in indices]
            else:
                yield [(epoch, i, c) for i, c in zip(indices, self._slice(copies, batch).tolist(), strict=True)]


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
