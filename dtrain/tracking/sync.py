"""`dtrain mlflow-sync RUN_DIR`: send MLflow what a run kept only in RUN_DIR/metrics.jsonl.
(A resumed run does the same for its MLflow run in the background: `catch_up`.)

metrics.jsonl holds every param, tag, metric and the final status of a run, whether or not the
tracking server was reachable. This sends the params MLflow lacks, every tag, each (metric, step)
MLflow has no point for, and the last status, to the run the JSONL names (a new run when it
never got one). Sending twice sends nothing new. A run still holding its run_dir lock is live
and is not touched.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtrain.checkpoint.run_lock import live_holder
from dtrain.errors import DtrainError
from dtrain.tracking.jsonl import JSONL_NAME, read_records
from dtrain.tracking.store import make_client, resolve_uri

BATCH = 1000  # MLflow's cap on metrics per log_batch
PARAM_BATCH = 100


@dataclass
class SyncReport:
    run_id: str
    uri: str
    metrics_sent: int
    params_sent: int
    status: str | None


@dataclass
class _Recorded:
    run_id: str | None
    uri: str | None
    run_name: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[tuple[str, int], tuple[float, int]]  # (key, step) -> (value, time in ms)
    status: str | None


def _read(path: Path) -> _Recorded:
    seen = _Recorded(None, None, "", {}, {}, {}, None)
    for record in read_records(path):
        kind = record.get("type")
        if kind == "run":
            seen.run_id = record.get("run_id") or seen.run_id
            seen.uri = record.get("uri") or seen.uri
            seen.run_name = record.get("run_name") or seen.run_name
        elif kind == "params":
            seen.params.update({k: str(v) for k, v in record["params"].items()})
        elif kind == "tags":
            seen.tags.update(record["tags"])
        elif kind == "metrics":
            stamp = int(record.get("time", 0) * 1000)
            for key, value in record["metrics"].items():
                seen.metrics[(key, int(record["step"]))] = (float(value), stamp)
        elif kind == "status":
            seen.status = record["status"]
    return seen


def sync_run_dir(run_dir: Path, uri: str | None = None, experiment: str = "dtrain") -> SyncReport:
    path = Path(run_dir) / JSONL_NAME
    if not path.is_file():
        raise DtrainError(f"{path} does not exist; give the run_dir of a dtrain run")
    if live_holder(Path(run_dir)) is not None:
        raise DtrainError(f"{run_dir} belongs to a run that is still going; sync it after it ends")
    seen = _read(path)
    uri = uri or seen.uri or resolve_uri(None, Path(run_dir))
    client = make_client(uri)
    try:
        run = _get_or_create(client, seen, experiment)
        run_id = run.info.run_id
        if run_id != seen.run_id:  # name it in the JSONL, so the next sync continues this run
            _append_run_record(path, run_id, uri, seen.run_name)
        params_sent = _send_params(client, run_id, seen.params, run.data.params)
        _send_tags(client, run_id, seen.tags)
        metrics_sent = _send_metrics(client, run_id, seen.metrics)
        if seen.status:
            client.set_terminated(run_id, seen.status)
    except DtrainError:
        raise
    except Exception as exc:  # noqa: BLE001 - any MLflow failure is one line for the user
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DtrainError(f"MLflow at {uri} did not take the run ({text}); retry when it is reachable") from None
    return SyncReport(run_id, uri, metrics_sent, params_sent, seen.status)


def catch_up(run_dir: Path, uri: str, run_id: str) -> int:
    """On resume: send the run `run_id` what the JSONL holds and it lacks (no status: the run goes
    on). Returns the metric points sent; raises whatever MLflow raises."""
    path = Path(run_dir) / JSONL_NAME
    if not path.is_file():
        return 0
    seen = _read(path)
    client = make_client(uri)
    run = client.get_run(run_id)
    _send_params(client, run_id, seen.params, run.data.params)
    _send_tags(client, run_id, seen.tags)
    return _send_metrics(client, run_id, seen.metrics)


def _append_run_record(path: Path, run_id: str, uri: str, run_name: str) -> None:
    record = {"type": "run", "time": round(time.time(), 3), "run_id": run_id, "run_name": run_name,
              "backend": "mlflow", "uri": uri, "by": "mlflow-sync"}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _get_or_create(client: Any, seen: _Recorded, experiment: str) -> Any:
    if seen.run_id:
        try:
            return client.get_run(seen.run_id)
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                raise
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    return client.create_run(experiment_id, run_name=seen.run_name or None)


def _send_params(client: Any, run_id: str, params: dict[str, str], existing: dict[str, str]) -> int:
    from mlflow.entities import Param

    missing = [Param(k, v[:6000]) for k, v in params.items() if k not in existing]
    for start in range(0, len(missing), PARAM_BATCH):
        client.log_batch(run_id, params=missing[start:start + PARAM_BATCH], synchronous=True)
    return len(missing)


def _send_tags(client: Any, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)[:8000]) for k, v in tags.items()]
    for start in range(0, len(items), PARAM_BATCH):
        client.log_batch(run_id, tags=items[start:start + PARAM_BATCH], synchronous=True)


def _send_metrics(client: Any, run_id: str, metrics: dict[tuple[str, int], tuple[float, int]]) -> int:
    from mlflow.entities import Metric

    have: dict[str, set[int]] = {}
    for key in {key for key, _ in metrics}:
        have[key] = {point.step for point in client.get_metric_history(run_id, key)}
    missing = [Metric(key, value, stamp, step) for (key, step), (value, stamp) in sorted(metrics.items())
               if step not in have[key]]
    for start in range(0, len(missing), BATCH):
        client.log_batch(run_id, metrics=missing[start:start + BATCH], synchronous=True)
    return len(missing)
