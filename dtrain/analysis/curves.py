"""Training and test error per iteration, read back from MLflow (what R1 Fig. 4 and 6 plot).

A run is named by its run directory (MLflow store sqlite:///RUN_DIR/mlflow.db, as the trainer
writes by default; RUN_DIR/metrics.jsonl when it trained with tracking.backend=jsonl or MLflow
is not installed) or by its run id (with --tracking-uri or MLFLOW_TRACKING_URI).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dtrain.errors import DtrainError
from dtrain.tracking.jsonl import JSONL_NAME, last_per_step, metric_history, read_records
from dtrain.tracking.store import DB_NAME, make_client, sqlite_uri

# The metric names the trainer logs (dtrain.engine). Several spellings are accepted, first found
# wins, so that runs written by an older or newer trainer still plot.
TRAIN_ERROR_KEYS = ("train/top1_err", "train_top1_err", "train/top1_error", "train/error")
TEST_ERROR_KEYS = ("val/top1_err", "val_top1_err", "val/top1_error", "test/top1_err", "val/error")
# Errors are plotted in percent. A history whose values never exceed 1 was logged as a fraction.
PERCENT = 100.0

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class RunCurves:
    label: str
    run_id: str
    train: list[tuple[int, float]] = field(default_factory=list)  # (iteration, error %)
    test: list[tuple[int, float]] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)

    def final_train_error(self, window: int = 3) -> float | None:
        """Mean of the last `window` logged training errors (each already a mean over the
        trainer's logging interval): the end-of-training error with less minibatch noise."""
        if not self.train:
            return None
        tail = [value for _, value in self.train[-window:]]
        return sum(tail) / len(tail)

    def final_test_error(self) -> float | None:
        return self.test[-1][1] if self.test else None

    def last_step(self) -> int:
        return max([s for s, _ in self.train] + [s for s, _ in self.test] + [0])


@dataclass(frozen=True)
class RunRef:
    tracking_uri: str
    run_id: str
    metrics_file: Path | None = None  # RUN_DIR/metrics.jsonl, read instead of an MLflow store


def resolve_run(run: str, tracking_uri: str | None = None) -> RunRef:
    """RUN is a run directory (holding mlflow.db) or an MLflow run id."""
    path = Path(run)
    if path.is_dir():
        uri = tracking_uri or (sqlite_uri(path) if (path / DB_NAME).is_file() else None)
        if uri is None and (path / JSONL_NAME).is_file():
            return RunRef("", _run_id_of_dir(path) or "", metrics_file=path / JSONL_NAME)
        if uri is None:
            raise DtrainError(f"{path} holds neither {DB_NAME} nor {JSONL_NAME}; pass --tracking-uri (the store "
                              "the run logged to) or a run directory written by `dtrain train`")
        return RunRef(uri, _run_id_of_dir(path) or _latest_run_id(uri, path))
    if _RUN_ID.match(run):
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise DtrainError(f"run id {run} needs --tracking-uri (or MLFLOW_TRACKING_URI) to find its store")
        return RunRef(uri, run)
    raise DtrainError(f"{run!r} is neither a run directory nor an MLflow run id (32 hex characters)")


def _run_id_of_dir(run_dir: Path) -> str | None:
    """The run id the trainer recorded in RUN_DIR/final_metrics.json, if it got that far."""
    try:
        return json.loads((run_dir / "final_metrics.json").read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def _latest_run_id(uri: str, run_dir: Path) -> str:
    """The newest run in the store of a run directory (a resumed run keeps its id)."""
    client = make_client(uri)  # imports mlflow (optional): only when a run is read
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments], order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs:
        raise DtrainError(f"{run_dir}/{DB_NAME} holds no run yet; train first "
                          f"(`dtrain train RECIPE run_dir={run_dir}`)")
    return runs[0].info.run_id


def _history(client, run_id: str, keys: tuple[str, ...]) -> list[tuple[int, float]]:
    for key in keys:
        metrics = client.get_metric_history(run_id, key)
        if metrics:
            by_step: dict[int, tuple[int, float]] = {}
            for m in metrics:  # a resumed run may log a step twice: the later one wins
                if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
                    by_step[m.step] = (m.timestamp, m.value)
            return sorted((step, value) for step, (_, value) in by_step.items())
    return []


def _as_percent(train: list[tuple[int, float]], test: list[tuple[int, float]]):
    """Decided once per run: a test error below 1% must not be mistaken for a fraction."""
    values = [v for _, v in train + test]
    scale = PERCENT if values and max(values) <= 1.0 else 1.0
    return [(s, v * scale) for s, v in train], [(s, v * scale) for s, v in test]


def _jsonl_run(path: Path) -> tuple[str, dict[str, str]]:
    """(run name, params) of a metrics.jsonl: the last "run" record names the run."""
    run_name, params = "", {}
    for record in read_records(path):
        if record.get("type") == "run":
            run_name = record.get("run_name") or ""
        elif record.get("type") == "params":
            params.update({k: str(v) for k, v in record.get("params", {}).items()})
    return run_name, params


def _first_series(history: dict[str, list[tuple[int, float]]], keys: tuple[str, ...]) -> list[tuple[int, float]]:
    """The first of `keys` the run logged, one point per step (a resumed run's later value wins)."""
    for key in keys:
        if history.get(key):
            return last_per_step([(int(step), float(value)) for step, value in history[key]])
    return []


def _read_run(ref: RunRef) -> tuple[str, dict, list, list]:
    """(run name, params, train history, test history) from the MLflow store or metrics.jsonl."""
    if ref.metrics_file is not None:
        run_name, params = _jsonl_run(ref.metrics_file)
        history = metric_history(ref.metrics_file)
        return run_name, params, _first_series(history, TRAIN_ERROR_KEYS), _first_series(history, TEST_ERROR_KEYS)
    client = make_client(ref.tracking_uri)
    try:
        run = client.get_run(ref.run_id)
    except Exception as exc:  # MLflow raises its own exception types per store
        raise DtrainError(f"run {ref.run_id} not found in {ref.tracking_uri}: {str(exc).splitlines()[0]}") from None
    return (run.info.run_name, dict(run.data.params), _history(client, ref.run_id, TRAIN_ERROR_KEYS),
            _history(client, ref.run_id, TEST_ERROR_KEYS))


def load_curves(ref: RunRef, label: str | None = None) -> RunCurves:
    run_name, params, train, test = _read_run(ref)
    train, test = _as_percent(train, test)
    curves = RunCurves(label=label or params.get("model.name") or run_name or ref.run_id[:8],
                       run_id=ref.run_id, params=params, train=train, test=test)
    if not curves.train and not curves.test:
        raise DtrainError(f"run {ref.run_id} has no error metrics (looked for {TRAIN_ERROR_KEYS[0]} and "
                          f"{TEST_ERROR_KEYS[0]}); was it trained with `dtrain train`?")
    return curves
