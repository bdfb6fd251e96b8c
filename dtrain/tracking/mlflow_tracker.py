"""MLflow tracking through `MlflowClient` (no fluent global state), buffered and failure-proof.

- Metrics are buffered and sent with `log_batch` (<= 1,000 per call, MLflow's cap): one call per
  value costs ~9 ms, a batch of 1,000 ~0.16 s.
- Every record is first written to RUN_DIR/metrics.jsonl, so nothing is lost while the server is
  down. A failed send warns once (one log line), keeps the data buffered (bounded; the oldest
  metrics are dropped from the buffer, not from the JSONL) and is retried on later flushes with
  exponential backoff. A tracking server never stops training. A batch whose reply was lost is
  sent again with the same timestamps; MLflow's store ignores such exact duplicates.
- `mlflow` is imported here, lazily: `import dtrain.tracking` stays cheap (mlflow takes ~2-3 s).
- Dataset inputs, system metrics and the run link: see mlflow_extras; the models: mlflow_models.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from dtrain.tracking import mlflow_extras, mlflow_models
from dtrain.tracking.base import DatasetRecord, check_status
from dtrain.tracking.jsonl import JsonlTracker
from dtrain.tracking.server_errors import one_line, why_not_reached
from dtrain.tracking.store import artifact_location, make_client

log = logging.getLogger(__name__)

# MLflow's own limits (mlflow/utils/validation.py): a log_batch takes <= 1,000 metrics and
# <= 100 params or tags; a param value is <= 6,000 characters, a tag value <= 8,000.
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
# Metrics kept in memory while the server is unreachable (~100 bytes each); older ones stay
# only in metrics.jsonl.
MAX_BUFFERED_METRICS = 200_000
RETRY_FIRST_SECONDS = 10.0
RETRY_MAX_SECONDS = 60.0
# At the end of a run (not a preemption, whose grace period is short) close() keeps trying
# this long so the run does not stay RUNNING because of one slow response.
CLOSE_RETRY_SECONDS = 30.0
# MLflow's HTTP defaults (7 retries, 120 s timeout) would stall training for minutes per
# attempt when the server is gone; our own backoff does the retrying, so one request should
# fail fast. Applied only where the user has not set them.
HTTP_FAIL_FAST_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
# Errors that retrying cannot fix: the data is dropped from the buffer (it is in the JSONL).
PERMANENT_ERROR_CODES = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE"}


class _Unreachable(Exception):
    """A send failed in a way worth retrying later (server down, timeout, database locked)."""


class MlflowTracker:
    def __init__(
        self,
        *,
        uri: str,
        experiment: str,
        run_dir: str | Path,
        run_name: str,
        resume_run_id: str | None = None,
        flush_every_seconds: float = 30.0,
        client: Any = None,
        max_buffered_metrics: int = MAX_BUFFERED_METRICS,
        system_metrics_interval: float | None = None,
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        self.run_dir = Path(run_dir)
        self.run_name = run_name
        self.flush_every_seconds = flush_every_seconds
        self.max_buffered_metrics = max_buffered_metrics
        self._resume_run_id = resume_run_id
        self._run_id: str | None = resume_run_id
        self._connected = False
        self._experiment: str | None = None
        self.system_metrics_interval = system_metrics_interval  # None: no system metrics
        self._system_monitor: Any = None
        self._existing_params: dict[str, str] = {}
        self._pending_params: dict[str, str] = {}
        self._pending_tags: dict[str, str] = {}
        self._pending_metrics: list[tuple[str, float, int, int]] = []  # key, value, ms, step
        self._pending_artifacts: list[tuple[str, str | None]] = []
        self._pending_datasets: list[DatasetRecord] = []
        self._pending_status: str | None = None
        self._failures = 0
        self.problem: str | None = None  # why the store is not reached, one line; None when it is
        self._retry_at = 0.0
        self._last_flush = time.monotonic()
        self._dropped_metrics = 0
        self._closed = False
        self.local = JsonlTracker(self.run_dir, run_id=resume_run_id, run_name=run_name, backend="mlflow", uri=uri)
        if uri.startswith(("http://", "https://")):
            for name, value in HTTP_FAIL_FAST_ENV.items():
                os.environ.setdefault(name, value)
        self._client = client if client is not None else make_client(uri)
        self._send_pending(force=True)  # creates (or reopens) the run now if the store is reachable

    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def run_link(self) -> str | None:
        """The run page's URL (after `mlflow ui ...` for a local store); None until the store is reached."""
        if not (self._run_id and self._experiment):
            return None
        return mlflow_extras.how_to_open(self.uri, mlflow_extras.run_url(self.uri, self._experiment, self._run_id))

    # -- the Tracker protocol ------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.local.log_params(params)
        for key, value in params.items():
            self._pending_params[key] = str(value)[:MAX_PARAM_VALUE]
        self.flush()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.local.set_tags(tags)
        for key, value in tags.items():
            self._pending_tags[key] = str(value)[:MAX_TAG_VALUE]
        self.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.local.log_metrics(metrics, step)
        now_ms = int(time.time() * 1000)
        self._pending_metrics.extend((key, float(value), now_ms, int(step)) for key, value in metrics.items())
        overflow = len(self._pending_metrics) - self.max_buffered_metrics
        if overflow > 0:
            del self._pending_metrics[:overflow]
            if not self._dropped_metrics:
                log.warning("MLflow unreachable for long: dropping the oldest buffered metrics from memory; "
                            "every metric stays in %s", self.local.path)
            self._dropped_metrics += overflow
        if (len(self._pending_metrics) >= METRICS_PER_BATCH
                or time.monotonic() - self._last_flush >= self.flush_every_seconds):
            self.flush()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.local.log_artifact(path, artifact_path)
        self._pending_artifacts.append((str(Path(path).resolve()), artifact_path))
        self.flush()

    def log_text(self, text: str, artifact_file: str) -> None:
        local_file, artifact_path = self.local.write_text(text, artifact_file)
        self._pending_artifacts.append((str(local_file), artifact_path))
        self.flush()

    def log_datasets(self, datasets: Sequence[DatasetRecord]) -> None:
        self.local.log_datasets(datasets)
        self._pending_datasets.extend(datasets)
        self.flush()

    def log_model(self, model: Any, example_input: Any, name: str, register_as: str | None = None,
                  evaluated_at: int | None = None) -> None:
        """Once, at the end of a run: a failure is logged, never raised (the checkpoint has the model)."""
        if not self._connected or self._closed or self._experiment is None or self._run_id is None:
            log.warning("MLflow unreachable: model %r not logged; the checkpoint has it", name)
            return
        self.flush()
        try:
            model_uri = mlflow_models.log_model(self.uri, self._experiment, self._run_id, model, example_input,
                                                name=name, register_as=register_as, evaluated_at=evaluated_at)
        except Exception as exc:
            log.warning("MLflow could not log model %r (%s); the checkpoint has it", name, one_line(exc))
            return
        self.local.write_record("model", name=name, model_uri=model_uri, registered_as=register_as)

    def flush(self) -> None:
        """Send what is buffered, unless a recent failure asks to wait (backoff)."""
        if self._closed:
            return
        self._send_pending(force=False)
        self.local.flush()

    def close(self, status: str = "FINISHED") -> None:
        """Flush everything (one last try even during backoff) and set the run's terminal status."""
        if self._closed:
            return
        self._closed = True
        self._pending_status = check_status(status)
        if self._system_monitor is not None:
            self._system_monitor.finish()  # its last samples are sent before the run ends
        self._send_pending(force=True)
        deadline = time.monotonic() + (CLOSE_RETRY_SECONDS if status != "KILLED" else 0.0)
        pause = 1.0
        while self._failures and time.monotonic() + pause < deadline:
            time.sleep(pause)
            pause *= 2
            self._send_pending(force=True)
        if self._failures:
            log.warning("MLflow run %s could not be completed at %s (%d metrics not sent); every metric is in %s",
                        self._run_id, self.uri, len(self._pending_metrics) + self._dropped_metrics, self.local.path)
        self.local.close(status)

    @property
    def pending_metrics(self) -> int:
        """Metrics buffered but not yet accepted by MLflow."""
        return len(self._pending_metrics)

    # -- sending -------------------------------------------------------------------------------

    def _send_pending(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now < self._retry_at:
            return
        self._last_flush = now
        try:
            self._connect()
            self._send_params()
            self._send_tags()
            self._send_metrics()
            self._send_artifacts()
            self._send_datasets()
            if self._pending_status:
                self._call("the run status", lambda: self._client.set_terminated(self._run_id, self._pending_status))
                self._pending_status = None
        except _Unreachable as exc:
            self._failures += 1
            self._retry_at = time.monotonic() + retry_delay(self._failures)
            self.problem = why_not_reached(self.uri, exc.__cause__ or exc)
            if self._failures == 1:
                log.warning("MLflow tracking at %s %s; training goes on, metrics are kept in %s and sent when it "
                            "is back", self.uri, self.problem, self.local.path)
            return
        self.problem = None
        if self._failures:
            log.warning("MLflow tracking at %s is reachable again; buffered metrics sent", self.uri)
            self._failures = 0
            self._retry_at = 0.0
        self._keep_system_metrics()

    def _keep_system_metrics(self) -> None:
        """A new monitor, continuing the system/ steps, where MLflow's stopped at a failed request."""
        monitor = self._system_monitor
        if (monitor is None or self._closed or self._run_id is None or not self.system_metrics_interval
                or mlflow_extras.system_metrics_running(monitor)):
            return
        monitor.finish()  # sends the samples it still held; the new one's steps follow them
        self._system_monitor = mlflow_extras.start_system_metrics(
            self.uri, self._run_id, self.system_metrics_interval, resumed=True)

    def _connect(self) -> None:
        if self._connected:
            return
        client = self._client
        experiment_id = self._call("the experiment", self._experiment_id, drop_ok=False)
        resume_id = self._resume_run_id
        run: Any = None  # an mlflow Run
        if resume_id:
            run = self._call("the resumed run", lambda: _get_run_or_none(client, resume_id), drop_ok=False)
            if run is not None:
                run_id = run.info.run_id
                self._call("the resumed run", lambda: client.update_run(run_id, status="RUNNING"), drop_ok=False)
                self._existing_params = dict(run.data.params)
            else:
                log.warning("MLflow run %s (from the checkpoint) is not in %s; starting a new run",
                            self._resume_run_id, self.uri)
        run_is_new = not self._resume_run_id or run is None
        if run_is_new:
            tags = {"dtrain.resumed_from_run_id": self._resume_run_id} if self._resume_run_id else {}
            run = self._call("the run", lambda: client.create_run(experiment_id, run_name=self.run_name or None,
                                                                   tags=tags), drop_ok=False)
        self._run_id = run.info.run_id
        self._experiment = run.info.experiment_id
        self._connected = True
        if self.system_metrics_interval:
            self._system_monitor = mlflow_extras.start_system_metrics(
                self.uri, self._run_id, self.system_metrics_interval, resumed=not run_is_new)
        if run_is_new:
            self.local.run_id = self._run_id
            self.local.write_record("run", run_id=self._run_id, run_name=self.run_name, backend="mlflow", uri=self.uri)

    def _experiment_id(self) -> str:
        client = self._client
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            return client.create_experiment(self.experiment, artifact_location=artifact_location(self.uri))
        except Exception:  # another run created it in between
            experiment = client.get_experiment_by_name(self.experiment)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _send_params(self) -> None:
        from mlflow.entities import Param

        pending = self._pending_params
        changed = {k: v for k, v in pending.items() if self._existing_params.get(k, v) != v}
        if changed:
            # MLflow params are immutable: a resumed run with other overrides keeps the first
            # values and records the new ones as tags.
            log.warning("resumed run changes params %s; MLflow keeps the first values, the new ones are "
                        "tags dtrain.resume_param.*", ", ".join(sorted(changed)))
            self._pending_tags.update({f"dtrain.resume_param.{k}": v for k, v in changed.items()})
        for key in [k for k in pending if k in self._existing_params]:
            del pending[key]
        while pending:
            chunk = list(pending.items())[:PARAMS_PER_BATCH]
            self._call("params", partial(self._client.log_batch, self._run_id,
                                         params=[Param(k, v) for k, v in chunk], synchronous=True))
            for key, value in chunk:
                self._existing_params[key] = value
                del pending[key]

    def _send_tags(self) -> None:
        from mlflow.entities import RunTag

        while self._pending_tags:
            chunk = list(self._pending_tags.items())[:PARAMS_PER_BATCH]
            self._call("tags", partial(self._client.log_batch, self._run_id,
                                       tags=[RunTag(k, v) for k, v in chunk], synchronous=True))
            for key, _ in chunk:
                del self._pending_tags[key]

    def _send_metrics(self) -> None:
        from mlflow.entities import Metric

        while self._pending_metrics:
            chunk = self._pending_metrics[:METRICS_PER_BATCH]
            self._call("metrics", partial(self._client.log_batch, self._run_id,
                                          metrics=[Metric(k, v, ms, step) for k, v, ms, step in chunk],
                                          synchronous=True))
            del self._pending_metrics[:len(chunk)]

    def _send_artifacts(self) -> None:
        while self._pending_artifacts:
            path, artifact_path = self._pending_artifacts[0]
            if Path(path).is_dir():
                self._call(f"artifact {path}", partial(self._client.log_artifacts, self._run_id, path, artifact_path))
            elif Path(path).exists():
                self._call(f"artifact {path}", partial(self._client.log_artifact, self._run_id, path, artifact_path))
            else:
                log.warning("artifact %s no longer exists; not sent to MLflow", path)
            self._pending_artifacts.pop(0)

    def _send_datasets(self) -> None:
        if self._pending_datasets:
            inputs = mlflow_extras.dataset_inputs(self._pending_datasets)
            self._call("dataset inputs", lambda: self._client.log_inputs(self._run_id, datasets=inputs))
            self._pending_datasets.clear()

    def _call(self, what: str, send: Callable[[], Any], drop_ok: bool = True) -> Any:
        """Run one MLflow call: a rejected payload is dropped with a warning, anything else is retried."""
        try:
            return send()
        except Exception as exc:
            if drop_ok and getattr(exc, "error_code", None) in PERMANENT_ERROR_CODES:
                log.warning("MLflow rejected %s (%s); they are kept in %s only", what, one_line(exc), self.local.path)
                return None
            raise _Unreachable(what) from exc


def retry_delay(failures: int) -> float:
    """Seconds before the next send after `failures` failed ones in a row: 10, 20, 40, 60, 60 ..."""
    return min(RETRY_FIRST_SECONDS * 2 ** min(failures - 1, 16), RETRY_MAX_SECONDS)


def _get_run_or_none(client: Any, run_id: str) -> Any:
    try:
        return client.get_run(run_id)
    except Exception as exc:
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
