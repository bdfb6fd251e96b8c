"""A real `dtrain mlflow-server` that dies mid-run and comes back: no metric is lost; one that is
reached by a name it does not allow says so."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from processes import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _start_server(tmp_path, port: int, *options: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "dtrain", "mlflow-server", "--backend-store-uri",
               f"sqlite:///{tmp_path / 'server' / 'mlflow.db'}", "--artifacts-destination",
               str(tmp_path / "server" / "artifacts"), "--port", str(port), *options]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except urllib.error.HTTPError:
            return process  # it answers (403 to a Host header it does not allow)
        except OSError:
            time.sleep(0.5)
    _stop(process)
    pytest.fail("mlflow server did not come up within 150 s")


def _stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)  # the server and its uvicorn worker, started by this test
    process.wait(timeout=30)


def test_server_outage_loses_nothing(tmp_path, monkeypatch, caplog):
    from mlflow.tracking import MlflowClient

    from dtrain.tracking import mlflow_tracker

    monkeypatch.setattr(mlflow_tracker, "RETRY_FIRST_SECONDS", 0.0)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")  # a server's first replies are slow on a busy machine
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    server = _start_server(tmp_path, port)
    try:
        # The MLflow tracker itself, synchronous (build_tracker runs it in a background thread).
        tracker = mlflow_tracker.MlflowTracker(uri=uri, experiment="dtrain", run_dir=tmp_path / "run",
                                               run_name="outage", flush_every_seconds=3600)
        run_id = tracker.run_id
        assert run_id
        tracker.log_params({"optim.lr": 0.1})
        for step in range(1, 501):
            tracker.log_metrics({"train/loss": float(step)}, step=step)
        tracker.flush()
        _stop(server)
        with caplog.at_level(logging.WARNING, logger="dtrain.tracking"):
            for step in range(501, 1001):
                tracker.log_metrics({"train/loss": float(step)}, step=step)
            tracker.flush()
            assert tracker.pending_metrics == 500
            server = _start_server(tmp_path, port)
            tracker.log_text("model: resnet18\n", "config.yaml")  # sends the buffer first
            tracker.close("FINISHED")
        assert sum(" is unreachable " in r.getMessage() for r in caplog.records) == 1
        client = MlflowClient(tracking_uri=uri)
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))
        assert history == [(s, float(s)) for s in range(1, 1001)]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.params == {"optim.lr": "0.1"}
        assert [a.path for a in client.list_artifacts(run_id)] == ["config.yaml"]
        assert list((tmp_path / "server" / "artifacts").rglob("config.yaml"))  # proxied to the server's store
    finally:
        _stop(server)


def _points(client, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))


def _wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.5)


def test_a_killed_server_gets_every_point_by_itself_once_restarted(tmp_path, monkeypatch, caplog):
    """As `dtrain train` tracks (build_tracker: the MLflow tracker in its background thread), with
    the server SIGKILLed mid-run and restarted on the same port: nothing stalls, the buffered
    points reach the server with no further call, and the run ends FINISHED with every point."""
    from mlflow.tracking import MlflowClient

    from dtrain.config import TrackingConfig
    from dtrain.tracking import build_tracker, mlflow_tracker

    monkeypatch.setattr(mlflow_tracker, "RETRY_FIRST_SECONDS", 1.0)
    monkeypatch.setattr(mlflow_tracker, "RETRY_MAX_SECONDS", 4.0)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    try:
        tracker = build_tracker(TrackingConfig(uri=uri, flush_every_seconds=3600), run_dir=tmp_path / "run", rank=0,
                                run_name="outage")
        assert tracker.run_link.startswith(f"{uri}/#/experiments/")  # in time for the header line
        client = MlflowClient(tracking_uri=uri)
        for step in range(1, 101):
            tracker.log_metrics({"train/loss": float(step)}, step=step)
        tracker.flush()  # as a checkpoint save does
        _wait_for(lambda: len(_points(client, tracker.run_id)) == 100, 60)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        with caplog.at_level(logging.WARNING, logger="dtrain.tracking"):
            started = time.monotonic()
            for step in range(101, 201):
                tracker.log_metrics({"train/loss": float(step)}, step=step)
            tracker.flush()
            assert time.monotonic() - started < 5.0  # training steps do not wait for the dead server
            _wait_for(lambda: tracker.problem is not None, 60)
            server = _start_server(tmp_path, port)
            _wait_for(lambda: len(_points(client, tracker.run_id)) == 200, 120)  # no tracker call since
            tracker.close("FINISHED")
        assert _points(client, tracker.run_id) == [(s, float(s)) for s in range(1, 201)]
        assert client.get_run(tracker.run_id).info.status == "FINISHED"
        messages = [r.getMessage() for r in caplog.records]
        assert sum(" is unreachable " in m for m in messages) == 1 and any("reachable again" in m for m in messages)
    finally:
        _stop(server)


def test_system_metrics_and_a_registered_model_with_metrics_reach_a_server(tmp_path, monkeypatch):
    """As `dtrain train` tracks against a server (build_tracker, default config but a short
    sampling interval): MLflow's monitor sends the run's system/ charts, and the logged model
    arrives with its validation metrics on the validation dataset, registered."""
    import torch
    from mlflow.tracking import MlflowClient

    from dtrain.config import TrackingConfig
    from dtrain.tracking import build_tracker
    from dtrain.tracking.base import DatasetRecord

    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", raising=False)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    try:
        tracker = build_tracker(TrackingConfig(uri=uri, system_metrics_interval=0.25), run_dir=tmp_path / "run",
                                rank=0, run_name="system")
        # Logging and registering a model takes a new server more than the default 10 s on a loaded
        # 2-core machine; the run would then end without it (by design), and this test is not about that.
        tracker.close_seconds = 120
        tracker.log_datasets([DatasetRecord("digits", "validation", "c" * 32, "/data/digits", {})])
        tracker.log_metrics({"val/top1_err": 12.5, "val/top5_err": 1.5}, step=40)
        time.sleep(2.0)  # several samples' worth of training
        tracker.log_model(torch.nn.Linear(4, 2), torch.zeros(1, 4), "model", register_as="server-net",
                          evaluated_at=40)
        tracker.close("FINISHED")
        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(tracker.run_id)
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
        assert len(client.get_metric_history(tracker.run_id, "system/cpu_utilization_percentage")) >= 2
        model = client.get_logged_model(run.outputs.model_outputs[0].model_id)
        assert {(m.key, m.value, m.dataset_name) for m in model.metrics} == {("val/top1_err", 12.5, "digits"),
                                                                             ("val/top5_err", 1.5, "digits")}
        versions = client.search_model_versions("name='server-net'")
        assert [(v.run_id, v.source) for v in versions] == [(tracker.run_id, f"models:/{model.model_id}")]
    finally:
        _stop(server)


def test_a_host_header_the_server_does_not_allow_is_named_with_the_fix(tmp_path, monkeypatch):
    """MLflow 3 refuses a Host header missing from --allowed-hosts (a client that reaches the
    server by an alias); the tracker says which name to allow, and `dtrain mlflow-server
    --allowed-hosts` passes it on."""
    from dtrain.tracking.mlflow_tracker import MlflowTracker

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = free_port()
    server = _start_server(tmp_path, port, "--allowed-hosts", "mlflow-alias,mlflow-alias:*")
    try:
        tracker = MlflowTracker(uri=f"http://127.0.0.1:{port}", experiment="dtrain", run_dir=tmp_path / "run",
                                run_name="alias")
        assert tracker.run_id is None
        assert f"--allowed-hosts 127.0.0.1:{port}" in tracker.problem and "Host header" in tracker.problem
        tracker.close("KILLED")
    finally:
        _stop(server)


def test_auth_asks_every_request_for_a_login_and_a_node_with_one_tracks(tmp_path, monkeypatch):
    """`dtrain mlflow-server --auth`: MLflow's basic-auth app. Anonymous requests are refused (the
    tracker says what to export); a node with MLFLOW_TRACKING_USERNAME/PASSWORD creates its run."""
    pytest.importorskip("flask_wtf", reason="dtrain[auth] not installed")
    from dtrain.tracking.mlflow_tracker import MlflowTracker

    password = "a-long-admin-password-1"
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", password)  # the first start creates the admin user
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port, "--auth")
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
        assert refused.value.code == 401
        anonymous = MlflowTracker(uri=uri, experiment="dtrain", run_dir=tmp_path / "anonymous", run_name="a")
        assert anonymous.run_id is None and "MLFLOW_TRACKING_USERNAME" in anonymous.problem
        anonymous.close("KILLED")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        tracker = MlflowTracker(uri=uri, experiment="dtrain", run_dir=tmp_path / "run", run_name="logged-in")
        assert tracker.run_id and tracker.problem is None
        tracker.close("FINISHED")
        assert (tmp_path / "server" / "basic_auth.db").is_file()  # beside the SQLite store
    finally:
        _stop(server)
