"""One batch ahead on a side CUDA stream: the gpu loader's decode and augmentation of batch i+1
run while the training step of batch i does, instead of in line with it on the default stream.

On a CPU device this is a plain loop (the CI path); on CUDA the hand-over is ordered by an event
per batch, and every handed-over tensor is marked as used by the consumer's stream so the
caching allocator does not recycle it while that stream still reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch

B = TypeVar("B")
T = TypeVar("T")


def _tensors(value: object) -> Iterator[torch.Tensor]:
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def one_ahead(device: torch.device, batches: Iterable[B], work: Callable[[B], T]) -> Iterator[T]:
    """work(batch) for every batch, in order."""
    if device.type != "cuda":
        for batch in batches:
            yield work(batch)
        return
    # torch.cuda.Stream and torch.cuda.Event have no type hints on their constructors.
    side = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
    main = torch.cuda.current_stream(device)
    pending: tuple[T, torch.cuda.Event] | None = None
    for batch in batches:
        with torch.cuda.stream(side):
            produced = work(batch)
            done = torch.cuda.Event()  # type: ignore[no-untyped-call]
            done.record(side)
        if pending is not None:
            yield _hand_over(*pending, main)
        pending = (produced, done)
    if pending is not None:
        yield _hand_over(*pending, main)


def _hand_over(value: T, done: torch.cuda.Event, main: torch.cuda.Stream) -> T:
    main.wait_event(done)
    for tensor in _tensors(value):
        tensor.record_stream(main)
    return value
