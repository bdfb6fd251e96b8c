"""Output whose reader is gone (a `| tee` killed by the same Ctrl-C) is dropped, never raised into
a training step (dtrain/tracking/console.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dtrain.tracking.console import ReaderSafeStream


def test_writes_after_the_reader_closed_the_pipe_are_dropped_not_raised() -> None:
    read_end, write_end = os.pipe()
    raw = open(write_end, "w", buffering=1, encoding="utf-8")  # noqa: SIM115  (the stream under test owns it)
    stream = ReaderSafeStream(raw)
    stream.write("step 1\n")
    assert os.read(read_end, 100) == b"step 1\n"
    os.close(read_end)  # tee died
    with pytest.raises(BrokenPipeError):
        print("step 2", file=raw, flush=True)  # what a bare stdout does to the training step
    stream.write("step 2\n")
    stream.flush()
    assert stream.reader_gone
    assert Path(f"/proc/self/fd/{write_end}").resolve() == Path(os.devnull)
    print("a library holding the raw stream", file=raw, flush=True)  # now succeeds, into /dev/null
    stream.write("summary\n")
    raw.close()


def test_other_errors_still_raise() -> None:
    class Full:
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        ReaderSafeStream(Full()).write("x")
