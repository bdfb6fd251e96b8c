"""One background writer: checkpoint files are written off the training thread, one at a time.

Training is blocked only while the state is copied to the CPU; the write (torch.save, fsync,
rename, best link, retention) runs here. At most one write is in flight: submitting another
first waits for the previous one, and `wait()` (before a final or preemption exit) returns once
the file is on disk. An error in the writer is raised on the training thread at the next
submit/wait, never lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class AsyncWriter:
    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def in_flight(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: Callable[[], None]) -> None:
        self.wait()
        # Not a daemon: an interpreter that exits while a write is in flight finishes it first.
        self._thread = threading.Thread(target=self._run, args=(job,), name="dtrain-checkpoint-writer")
        self._thread.start()

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # re-raised on the training thread by wait()
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error
