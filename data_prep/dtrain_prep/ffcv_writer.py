"""FFCV's DatasetWriter with two fixes: a dead writer process fails the run, and per-sample digests.

FFCV's own `_write_common` polls a done-counter forever: a child that raises (e.g. an image over
the page size) leaves the parent waiting at 0% CPU next to a defunct child. This copy of it checks
its children on every poll and raises the child's own error. Imports ffcv: load it lazily.
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
import os
import queue
import time

import numpy as np
from ffcv.fields import RGBImageField
from ffcv.fields.rgb_image import IMAGE_MODES
from ffcv.memory_allocator import MemoryAllocator
from ffcv.writer import DatasetWriter

from .errors import PrepareFailure

# FFCV forks its writers (they share the metadata and the allocator's counters by inheritance).
_FORK = multiprocessing.get_context("fork")
DIGEST_SIZE = 32  # sha256


class StoredJpeg(bytes):
    """A JPEG the shard stage already validated, stored in the .beton as is (no decode, no re-encode)."""

    width: int
    height: int

    def __new__(cls, data: bytes, width: int, height: int):
        jpeg = super().__new__(cls, data)
        jpeg.width, jpeg.height = width, height
        return jpeg


def digest_image_field(field: RGBImageField, digests: np.ndarray) -> RGBImageField:
    """Make field store StoredJpeg as is and record the sha256 of every sample's stored bytes.

    Patched on the instance, not subclassed: FFCV identifies a field by its exact type.
    """
    original = field.encode

    def encode(destination, value, malloc):
        written = []

        def tracked(size):
            pointer, storage = malloc(size)
            written.append(storage)
            return pointer, storage

        if isinstance(value, StoredJpeg):
            destination["mode"] = IMAGE_MODES["jpg"]
            destination["height"], destination["width"] = value.height, value.width
            destination["data_ptr"], storage = tracked(len(value))
            storage[:] = np.frombuffer(value, dtype="<u1")
        else:
            original(destination, value, tracked)
        sample = malloc.__self__.current_sample_id
        digests[sample] = np.frombuffer(hashlib.sha256(b"".join(s.tobytes() for s in written)).digest(), "<u1")

    field.encode = encode
    return field


def shared_digests(count: int) -> np.ndarray:
    """count x 32 bytes in anonymous shared memory: what forked writers store is seen here."""
    import mmap

    buffer = mmap.mmap(-1, max(1, count * DIGEST_SIZE))
    return np.frombuffer(buffer, dtype="<u1", count=count * DIGEST_SIZE).reshape(count, DIGEST_SIZE)


def _report_errors(errors, work_fn, *args) -> None:
    try:
        work_fn(*args)
    except BaseException as exc:  # noqa: BLE001 - any failure must reach the parent, then end the child
        errors.put(f"{type(exc).__name__}: {exc}")
        errors.close()
        errors.join_thread()
        os._exit(1)


class CheckedDatasetWriter(DatasetWriter):
    """DatasetWriter whose parent fails at once, with the child's error, when a writer dies."""

    def __init__(self, *args, progress=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = progress

    def _check(self, processes, errors) -> None:
        dead = [p for p in processes if p.exitcode not in (None, 0)]
        if dead:
            try:
                error = errors.get(timeout=5)
            except queue.Empty:
                error = f"exit status {dead[0].exitcode}"
            raise PrepareFailure(f"FFCV writer process {dead[0].pid} failed ({error}) writing {self.fname}: "
                                "fix the cause, then re-run the same command to resume")

    def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):
        self.num_samples = num_samples
        self.prepare()
        work, allocations, errors = _FORK.Queue(), _FORK.Queue(), _FORK.Queue()
        for todo in queue_content:
            work.put(todo)
        for _ in range(self.num_workers):
            work.put(None)
        done = _FORK.Value(ctypes.c_uint64, 0)
        allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
        args = (work, self.metadata_sm, self.metadata_type, self.fields, allocator, done, allocations,
                *extra_worker_args)
        processes = [_FORK.Process(target=_report_errors, args=(errors, work_fn, *args))
                     for _ in range(self.num_workers)]
        try:
            for process in processes:
                process.start()
            previous = 0
            while previous != self.num_samples:
                self._check(processes, errors)
                current = done.value
                if self.progress is not None and current > previous:
                    self.progress.update(current - previous)
                previous = current
                time.sleep(0.05)
            collected: list[list] = []  # each writer's allocation entries
            while len(collected) < len(processes):
                self._check(processes, errors)
                try:
                    collected.append(allocations.get(timeout=0.5))
                except queue.Empty:
                    continue
            self.finalize([entry for part in collected for entry in part])
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
                process.join()
            self.metadata_sm.close()
            self.metadata_sm.unlink()
