"""What MLflow's run page shows beyond params and curves: the datasets, system metrics, and a link
to the run (the models: mlflow_models). Used by MlflowTracker (rank 0 only); mlflow is imported
lazily.

- Datasets are run inputs (MLflow's "Datasets" column and run section) with the manifest's digest
  and counts: a changed dataset shows as a changed digest.
- System metrics use MLflow's own `SystemMetricsMonitor`, the one `mlflow.start_run(
  log_system_metrics=True)` starts (CPU, memory, disk, network through psutil; GPU through
  nvidia-ml-py where an NVIDIA driver answers: both are dtrain dependencies), sampled every
  `tracking.system_metrics_interval` seconds (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL, when set,
  wins, as MLflow documents). It writes with its own client to the run's URI, SQLite or server.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dtrain.tracking.base import DatasetRecord

log = logging.getLogger(__name__)

# MLflow 3.17's UI picks its GenAI or "Model training" view from the URL's workflowType, else the
# browser's last choice (GenAI on a first visit); no experiment setting changes that (its
# mlflow.experimentKind tag is not read while the view switch is shown: checked in Chromium).
# So the link carries the training view.
TRAINING_VIEW_QUERY = "workflowType=machine_learning"
# Where `mlflow ui` serves by default: the link printed for a SQLite store.
LOCAL_UI = "http://127.0.0.1:5000"
# MLflow's input tag that says what a dataset was used for (shown beside the dataset's name).
DATASET_CONTEXT_TAG = "mlflow.data.context"


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The run page: on the server for an HTTP URI, on a local `mlflow ui` otherwise."""
    base = uri.rstrip("/") if is_server(uri) else LOCAL_UI
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW_QUERY}"


def how_to_open(uri: str, url: str) -> str:
    """One line: the link, preceded by the command that serves it for a local store."""
    if is_server(uri):
        return url
    return f"mlflow ui --backend-store-uri {uri}  then open {url}"


def dataset_inputs(datasets: Sequence[DatasetRecord]) -> list[Any]:
    """MLflow DatasetInput entities for `client.log_inputs`."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for record in datasets:
        entity = Dataset(name=record.name, digest=record.digest[:36], source_type="local",
                         source=json.dumps({"uri": record.source}), profile=json.dumps(dict(record.profile)))
        inputs.append(DatasetInput(dataset=entity, tags=[InputTag(key=DATASET_CONTEXT_TAG, value=record.context)]))
    return inputs


def start_system_metrics(uri: str, run_id: str, interval: float, resumed: bool) -> Any:
    """A started SystemMetricsMonitor (stop it with `.finish()`), or None when psutil is missing
    (a dtrain dependency: only a broken install lacks it)."""
    try:
        import psutil  # noqa: F401  (MLflow's CPU/memory monitors need it)
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ModuleNotFoundError as exc:
        log.warning("system metrics are off: %s is not installed (pip install %s, or reinstall dtrain)",
                    exc.name, exc.name)
        return None
    # Its INFO lines ("Started monitoring ...") would land in every run's log.
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, resume_logging=resumed, tracking_uri=uri)
    monitor.start()
    return monitor


def system_metrics_running(monitor: Any) -> bool:
    """Whether the monitor still samples. MLflow's ends its thread at its first failed request
    (a server that is down, a locked SQLite store) and never restarts it, so the tracker starts a
    new one, resuming its steps, once the store answers again."""
    thread = getattr(monitor, "_process", None)  # MLflow 3.17: its sampling thread, None after finish()
    return thread is not None and thread.is_alive()
