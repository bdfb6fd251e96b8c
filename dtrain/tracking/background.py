"""A tracker that never stalls a training step: the real tracker runs in a thread of its own.

A tracking server that accepts connections but never answers stalled training 20 s at start,
23 s mid-run and 63 s at the end (each HTTP request waits its timeout). Here every call only
puts an item on a bounded queue; one daemon thread builds the real tracker (connecting is a
request too) and feeds it. When the queue is full (the server has been stuck for a long time)
items go straight to RUN_DIR/metrics.jsonl instead, so nothing is lost.

While the server is not reached and the queue is idle, the thread flushes the real tracker every
IDLE_FLUSH_SECONDS, which retries (with its backoff) what the server could not take: once the
server is back, the buffered metrics reach it without any new call. Items that only reached
metrics.jsonl (the queue was full) are sent from there before the run's terminal status
(`catch_up`).

The run's header waits for the first connection at most START_WAIT_SECONDS, so a reachable
server's run link is in it. At the end, close() waits at most `close_seconds` (default 10 s)
for the thread to send what is queued and set the run's status. After that the run ends anyway:
what was not handed to the tracker is written to metrics.jsonl, and `dtrain mlflow-sync RUN_DIR`
(or the next resume of the run) sends whatever MLflow lacks and sets the final status.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dtrain.tracking.base import DatasetRecord, Tracker, check_status
from dtrain.tracking.jsonl import JSONL_NAME
from dtrain.tracking.server_errors import one_line

log = logging.getLogger(__name__)

QUEUE_ITEMS = 10_000
CLOSE_SECONDS = 10.0
START_WAIT_SECONDS = 10.0
IDLE_FLUSH_SECONDS = 1.0
_CLOSE = "close"
NOT_ANSWERED = f"has not answered within {START_WAIT_SECONDS:.0f} s"


class BackgroundTracker:
    def __init__(self, factory: Callable[[], Tracker], run_dir: str | Path, *, resume_run_id: str | None = None,
                 close_seconds: float = CLOSE_SECONDS, max_items: int = QUEUE_ITEMS,
                 catch_up: Callable[[str], Any] | None = None) -> None:
        """`catch_up(run_id)` sends the run what metrics.jsonl holds and it lacks: first in the thread
        for a resumed run (what an earlier attempt could not send), and before the terminal status
        when calls had to go to metrics.jsonl because the queue was full."""
        self.run_dir = Path(run_dir)
        self.close_seconds = close_seconds
        self._resume_run_id = resume_run_id
        self._catch_up = catch_up
        self._inner: Tracker | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max_items)
        self._closed = False
        self._done = threading.Event()
        self._abandoned = False
        self._spill_lock = threading.Lock()
        self._spilled = 0
        self._built = threading.Event()
        self._waited_for_start = False
        self._thread = threading.Thread(target=self._work, args=(factory,), name="dtrain-tracker", daemon=True)
        self._thread.start()

    def _started(self) -> bool:
        """True once the real tracker made its first connection attempt. The first call waits for
        it, once and at most START_WAIT_SECONDS (a silent server costs that, once)."""
        if not self._waited_for_start:
            self._waited_for_start = True
            self._built.wait(START_WAIT_SECONDS)
        return self._built.is_set()

    @property
    def run_id(self) -> str | None:
        """The tracked run's id (stored in checkpoints); a silent server leaves it None (the
        checkpoint then names no run, and a resumed run starts a new one)."""
        inner = self._inner if self._started() else None
        return inner.run_id if inner is not None and inner.run_id else self._resume_run_id

    @property
    def run_link(self) -> str | None:
        """The run's page, once the tracker has connected (None while the server is silent)."""
        inner = self._inner if self._started() else None
        return inner.run_link if inner is not None else None

    @property
    def problem(self) -> str | None:
        """Why the server is not reached (one line), None when it is."""
        if not self._started():
            return NOT_ANSWERED
        inner = self._inner
        return "could not start the tracker" if inner is None else inner.problem

    @property
    def finished(self) -> bool:
        """True once the real tracker has closed (everything it was given is sent or given up on)."""
        return self._done.is_set() and not self._abandoned

    # -- the Tracker protocol: enqueue only -----------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._put("log_params", dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._put("log_metrics", {k: float(v) for k, v in metrics.items()}, int(step))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._put("set_tags", dict(tags))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._put("log_artifact", str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._put("log_text", text, artifact_file)

    def log_datasets(self, datasets: Sequence[DatasetRecord]) -> None:
        self._put("log_datasets", list(datasets))

    def log_model(self, model: Any, example_input: Any, name: str, register_as: str | None = None,
                  evaluated_at: int | None = None) -> None:
        # Sent at the end of a run, when the weights no longer change; a close that times out
        # leaves the model to the checkpoint on disk (its path is a tag of the run).
        self._put("log_model", model, example_input, name, register_as, evaluated_at)

    def flush(self) -> None:
        self._put("flush")

    def close(self, status: str = "FINISHED") -> None:
        """Hand over the terminal status and wait at most close_seconds; never longer."""
        if self._closed:
            return
        self._closed = True
        check_status(status)
        deadline = time.monotonic() + self.close_seconds
        with contextlib.suppress(queue.Full):  # the wait below is bounded by the same deadline
            self._queue.put((_CLOSE, (status,)), timeout=self.close_seconds)
        if self._done.wait(max(0.0, deadline - time.monotonic())):
            if self._spilled:
                log.warning("%d tracking calls waited in %s instead of MLflow; send them with "
                            "`dtrain mlflow-sync %s`", self._spilled, self.run_dir / JSONL_NAME, self.run_dir)
            return
        self._abandoned = True
        left = self._drain()
        self._spill(left + [("close", (status,))])
        log.warning("MLflow did not finish within %.0f s; the run ends anyway and %s keeps every metric: send "
                    "them and set the run's status with `dtrain mlflow-sync %s`", self.close_seconds,
                    self.run_dir / JSONL_NAME, self.run_dir)

    # -- internals -----------------------------------------------------------------------------

    def _put(self, method: str, *args: Any) -> None:
        if self._closed:
            return
        try:
            self._queue.put_nowait((method, args))
        except queue.Full:
            self._spill([(method, args)])

    def _work(self, factory: Callable[[], Tracker]) -> None:
        if self._resume_run_id:
            self._send_from_jsonl(self._resume_run_id)
        try:
            self._inner = factory()
        except Exception as exc:  # noqa: BLE001 - tracking must never end a run
            log.warning("tracking could not start (%s); everything stays in %s", exc, self.run_dir / JSONL_NAME)
            self._inner = None
        self._built.set()
        while not self._abandoned:
            try:
                method, args = self._queue.get(timeout=IDLE_FLUSH_SECONDS)
            except queue.Empty:
                if self._inner is not None and self._inner.problem:
                    self._call("flush", ())  # retries what the server could not take (with its backoff)
                continue
            if self._abandoned:
                return
            if method == _CLOSE and self._spilled and self._inner is not None and self._inner.run_id:
                # What went only to metrics.jsonl while the queue was full; the tracker's own
                # buffer first, or those points would be sent twice.
                self._call("flush", ())
                self._send_from_jsonl(self._inner.run_id)
            if self._inner is None:
                self._spill([(method, args)])
            else:
                self._call(method, args)
            if method == _CLOSE:
                self._done.set()
                return

    def _call(self, method: str, args: tuple) -> None:
        if self._inner is None:
            return
        try:
            getattr(self._inner, method)(*args)
        except Exception as exc:  # noqa: BLE001
            log.warning("tracking call %s failed: %s", method, exc)

    def _send_from_jsonl(self, run_id: str) -> None:
        if self._catch_up is None:
            return
        try:
            self._catch_up(run_id)
        except Exception as exc:  # noqa: BLE001 - the server may still be down; mlflow-sync later
            log.warning("could not send MLflow what only %s holds (%s); `dtrain mlflow-sync %s` does it after the "
                        "run", self.run_dir / JSONL_NAME, one_line(exc), self.run_dir)

    def _drain(self) -> list[tuple[str, tuple]]:
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _spill(self, items: list[tuple[str, tuple]]) -> None:
        """Write calls the real tracker never got to metrics.jsonl, in its record format."""
        records = [record for method, args in items if (record := _as_record(method, args)) is not None]
        if not records:
            return
        self._spilled += len(records)
        with self._spill_lock, open(self.run_dir / JSONL_NAME, "a", encoding="utf-8") as handle:
            for kind, fields in records:
                handle.write(json.dumps({"type": kind, "time": round(time.time(), 3), **fields}, default=str) + "\n")


def _as_record(method: str, args: tuple) -> tuple[str, dict] | None:
    if method == "log_metrics":
        return "metrics", {"step": args[1], "metrics": args[0]}
    if method == "log_params":
        return "params", {"params": {k: v if isinstance(v, (int, float, bool, str, type(None))) else str(v)
                                     for k, v in args[0].items()}}
    if method == "set_tags":
        return "tags", {"tags": {k: str(v) for k, v in args[0].items()}}
    if method == "log_artifact":
        return "artifact", {"path": args[0], "artifact_path": args[1]}
    if method == _CLOSE:
        return "status", {"status": args[0]}
    return None  # flush; log_text's file is written by the tracker itself
