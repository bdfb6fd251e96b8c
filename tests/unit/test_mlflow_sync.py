"""`dtrain mlflow-sync` and a resumed run's catch-up send MLflow exactly what metrics.jsonl has
and MLflow lacks, and the final status (dtrain/tracking/sync.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtrain.tracking.jsonl import JsonlTracker
from dtrain.tracking.sync import catch_up, sync_run_dir


def _history(client, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))


def test_sync_sends_what_is_missing_once_and_sets_the_status(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    local = JsonlTracker(run_dir, run_name="offline")  # a run whose server was never reached
    local.log_params({"optim.lr": 0.1})
    for step in range(1, 6):
        local.log_metrics({"train/loss": 1.0 / step}, step)
    local.close("FINISHED")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    first = sync_run_dir(run_dir, uri=uri)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"optim.lr": "0.1"}
    assert _history(client, first.run_id) == [(s, 1.0 / s) for s in range(1, 6)]
    again = sync_run_dir(run_dir, uri=uri)
    assert (again.run_id, again.metrics_sent, again.params_sent) == (first.run_id, 0, 0)

    resumed = JsonlTracker(run_dir, run_id=first.run_id)  # the resumed run logs on, server down again
    for step in range(6, 9):
        resumed.log_metrics({"train/loss": 1.0 / step}, step)
    resumed.close("FINISHED")
    assert catch_up(run_dir, uri, first.run_id) == 3
    assert _history(client, first.run_id) == [(s, 1.0 / s) for s in range(1, 9)]
