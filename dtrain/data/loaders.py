"""The reference loaders: any image source + our transforms + torch's DataLoader.

torch's DataLoader does the worker processes, prefetching and pinning; we only give it a
batch sampler whose keys carry (epoch, sample index), so what a batch holds never depends on the
number of workers or on where iteration started. Workers return uint8 pixels; the batch is
moved to the device and normalised there in one multiply-add.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dtrain.distributed.lifetime import die_with_parent, stop_children_at_exit
from dtrain.errors import DtrainError

from .eval_views import EvalTransform
from .padding import stack_windows
from .sampling import EvalBatchSampler, TrainBatchSampler, sample_rng
from .transforms import EpochTransforms


class ImageSource(Protocol):
    def __len__(self) -> int: ...
    def label(self, index: int) -> int: ...
    def image(self, index: int) -> Image.Image: ...
    def image_sizes(self) -> tuple[np.ndarray, np.ndarray]: ...


class EvalBatch(NamedTuple):
    views: list[torch.Tensor]  # one [B, C, H, W] tensor per view
    labels: torch.Tensor  # [B] int64
    valid: torch.Tensor  # [B] bool; False for padding, which must not be counted


class _TrainSamples(Dataset):
    def __init__(self, source: ImageSource, transforms: EpochTransforms, seed: int):
        self.source, self.transforms, self.seed = source, transforms, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        epoch, index = key[:2]  # key: (epoch, index) or, with repeated augmentation, (epoch, index, copy)
        transform = self.transforms(epoch)  # the epoch's crop size (progressive resizing)
        pixels, offset, window = transform.sample(self.source.image(index), sample_rng(self.seed, *key))
        return pixels, offset, window, self.source.label(index)


class _EvalSamples(Dataset):
    def __init__(self, source: ImageSource, transform: EvalTransform):
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, bool]) -> tuple[list[torch.Tensor], int, bool]:
        index, valid = key
        return self.transform.pixels(self.source.image(index)), self.source.label(index), valid


def _collate_train(items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]]):
    pixels = torch.stack([item[0] for item in items])
    offsets = torch.stack([item[1] for item in items])
    windows = stack_windows(item[2] for item in items)
    labels = torch.tensor([item[3] for item in items], dtype=torch.int64)
    return pixels, offsets, windows, labels


def _collate_eval(items: list[tuple[list[torch.Tensor], int, bool]]) -> EvalBatch:
    num_views = len(items[0][0])
    views = [torch.stack([item[0][v] for item in items]) for v in range(num_views)]
    labels = torch.tensor([item[1] for item in items], dtype=torch.int64)
    valid = torch.tensor([item[2] for item in items], dtype=torch.bool)
    return EvalBatch(views, labels, valid)


def _init_worker(worker_id: int) -> None:
    """torchrun, Slurm and Kubernetes signal the whole process group on preemption. A worker
    that died of that SIGTERM would crash the main process before it writes its preemption
    checkpoint, so workers leave SIGTERM/SIGUSR1 to the main process. Ctrl-C reaches the whole
    foreground process group: SIGINT is the main process's too. In exchange a worker dies with the
    main process (PDEATHSIG), and the main process kills its workers at exit
    (dtrain.distributed.lifetime), so ignoring these signals never keeps a process alive."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


@contextlib.contextmanager
def _readable_data_errors(split: str) -> Iterator[None]:
    """A shard deleted, truncated or unreadable after the run started: one line, not a traceback
    (a worker's error arrives as its whole traceback in the message; its last line says it)."""
    try:
        yield
    except OSError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        cause = lines[-1].strip() if lines else type(exc).__name__
        raise DtrainError(f"cannot read the {split} data: {cause}; check data.root, or run `dtrain prepare "
                          "verify DATA_ROOT` and re-run `dtrain prepare` for the damaged files") from None


def batch_data_loader(dataset: Dataset, batch_sampler, collate, workers: int, device: torch.device) -> DataLoader:
    if workers > 0:
        stop_children_at_exit()
    # DataLoader draws its workers' base seed at every iter(); from the global torch RNG unless
    # given a generator. Our samples never use that seed, but a draw from the global stream
    # would make a resumed run's RNG state differ from the uninterrupted run's.
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),
        worker_init_fn=_init_worker,
    )


class TrainLoader:
    """Batches (images float32 NCHW normalised, labels int64) on `device` for one rank.

    len(loader) is the number of batches of a whole epoch (the same on every rank); after
    set_epoch(epoch, skip_batches=k) iteration yields batches k..len-1 of that epoch.
    """

    def __init__(self, source: ImageSource, transforms: EpochTransforms, *, batch_size: int, rank: int,
                 world_size: int, seed: int, workers: int, device: torch.device, repeats: int = 1):
        self.source = source
        self.device = device
        self.normalize = transforms.normalize
        self.sampler = TrainBatchSampler(len(source), batch_size, rank, world_size, seed, repeats)
        self.loader = batch_data_loader(_TrainSamples(source, transforms, seed), self.sampler, _collate_train,
                                   workers, device)

    @property
    def num_samples(self) -> int:
        """Samples in the split (the epoch uses len(self) * global batch of them)."""
        return len(self.source)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.sampler.set_epoch(epoch, skip_batches)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        non_blocking = self.device.type == "cuda"
        with _readable_data_errors("training"):
            for pixels, offsets, windows, labels in self.loader:
                images = self.normalize(pixels.to(self.device, non_blocking=non_blocking), offsets, windows)
                yield images, labels.to(self.device, non_blocking=non_blocking)


class EvalLoader:
    """EvalBatch(views, labels, valid) on `device`; padding (valid=False) evens out the ranks.

    Views of different sizes (multi-scale on images of different shapes) cannot be stacked, so
    then each batch holds one image.
    """

    def __init__(self, source: ImageSource, transform: EvalTransform, *, batch_size: int, rank: int,
                 world_size: int, workers: int, device: torch.device):
        self.source = source
        self.device = device
        self.normalize = transform.normalize
        if not transform.fixed_size and not all_same_size(*source.image_sizes()):
            batch_size = 1
        self.batch_size = batch_size
        self.sampler = EvalBatchSampler(len(source), batch_size, rank, world_size)
        self.loader = batch_data_loader(_EvalSamples(source, transform), self.sampler, _collate_eval, workers, device)

    @property
    def num_samples(self) -> int:
        """Real samples of the split over all ranks (padding excluded)."""
        return len(self.source)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[EvalBatch]:
        non_blocking = self.device.type == "cuda"
        with _readable_data_errors("validation"):
            yield from self._batches(non_blocking)

    def _batches(self, non_blocking: bool) -> Iterator[EvalBatch]:
        for batch in self.loader:
            yield EvalBatch([self.normalize(v.to(self.device, non_blocking=non_blocking)) for v in batch.views],
                            batch.labels.to(self.device, non_blocking=non_blocking),
                            batch.valid.to(self.device, non_blocking=non_blocking))


def all_same_size(widths: Sequence[int] | np.ndarray, heights: Sequence[int] | np.ndarray) -> bool:
    return len(set(zip(np.asarray(widths).tolist(), np.asarray(heights).tolist(), strict=True))) <= 1
