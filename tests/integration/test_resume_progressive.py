"""Exact resume with progressive resizing: the tiny run (8 batches an epoch, 3 epochs) trains at
32, 64 and 96 pixels (data.min_res=32 -> max_res=96 over epochs 0..2); preempted in the middle
of epoch 1 and resumed, it ends with the bits of the uninterrupted run (weights, optimiser and
RNG: tests/integration/resume_runs.py's harness), the crop size being a function of the epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
from resume_runs import assert_bitwise_equal, final_checkpoint, train_in_process, uninterrupted

from dtrain.data import loaders

PROGRESSIVE = ("data.train_augment=random_resized_crop", "data.synthetic_image_size=96", "data.min_res=32",
               "data.max_res=96", "data.start_ramp=0", "data.end_ramp=2")


def _record_sizes(monkeypatch: pytest.MonkeyPatch) -> set[tuple[int, int]]:
    """(epoch, crop side) of every training sample cut in this process (data.workers=0)."""
    seen: set[tuple[int, int]] = set()
    cut = loaders._TrainSamples.__getitem__

    def recording(self, key):
        sample = cut(self, key)
        seen.add((key[0], sample[0].shape[0]))
        return sample

    monkeypatch.setattr(loaders._TrainSamples, "__getitem__", recording)
    return seen


def test_progressive_run_preempted_mid_epoch_then_resumed_is_bitwise_identical(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    seen = _record_sizes(monkeypatch)
    reference = uninterrupted(tmp_path / "reference", random_op=True, overrides=PROGRESSIVE)
    assert seen == {(0, 32), (1, 64), (2, 96)}
    seen.clear()
    run_dir = tmp_path / "interrupted"
    first = train_in_process(run_dir, sigterm_at_batch=11, overrides=PROGRESSIVE)  # stops after step 12, mid-epoch 1
    assert first.exit_code == 0 and first.result.stopped == "preempted" and first.result.step == 12
    assert seen == {(0, 32), (1, 64)}
    seen.clear()
    second = train_in_process(run_dir, overrides=PROGRESSIVE)
    assert second.exit_code == 0 and second.result.stopped == "finished"
    assert seen == {(1, 64), (2, 96)}  # the rest of epoch 1 at its size, then epoch 2
    assert_bitwise_equal(final_checkpoint(run_dir), reference)
