"""Tracking: what a user reads back from MLflow / metrics.jsonl after a run, resume, an outage."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from processes import free_port

from dtrain.config import RunConfig, TrackingConfig, to_dict
from dtrain.tracking import (
    JsonlTracker,
    MetricAggregator,
    NullTracker,
    applicable_params,
    build_tracker,
    metric_history,
    read_records,
    record_run_end,
    record_run_start,
    resolve_uri,
)

pytestmark = pytest.mark.timeout(120)


def _client(run_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{run_dir.resolve() / 'mlflow.db'}")


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(autouse=True)
def _no_ambient_server(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_mlflow_run_holds_params_metrics_tags_and_artifacts(tmp_path):
    run_dir = tmp_path / "run"
    config = RunConfig(recipe="unit_recipe")
    tracker = build_tracker(TrackingConfig(experiment="unit"), run_dir=run_dir, rank=0, run_name="r18",
                            resume_run_id=None)
    record_run_start(tracker, config, world_size=4, device_names=["cpu"])
    extra = {f"extra.key{i:03d}": i for i in range(250)}  # > MLflow's 100 params per log_batch
    extra["extra.long"] = "x" * 7000  # > MLflow's 6,000-character limit: truncated, not an error
    tracker.log_params(extra)
    for step in range(1, 1201):  # more than one batch of 1,000
        tracker.log_metrics({"train/loss": 1.0 / step}, step=step)
    extra_file = tmp_path / "notes.txt"
    extra_file.write_text("hello")
    tracker.log_artifact(extra_file)
    run_id = tracker.run_id
    record_run_end(tracker, {"val/top1_err": 0.25, "epochs": 90}, step=1200)

    client = _client(run_dir)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r18"
    config_params = {k: str(v) for k, v in applicable_params(config).items()}
    assert {k: run.data.params[k] for k in config_params} == config_params
    assert run.data.params["extra.key249"] == "249" and len(run.data.params["extra.long"]) == 6000
    assert len(run.data.params) == len(config_params) + 251
    assert run.data.tags["world_size"] == "4" and run.data.tags["recipe"] == "unit_recipe"
    assert run.data.tags["version.torch"] and run.data.tags["devices"] == "cpu"
    loss = _history(client, run_id, "train/loss")
    assert loss == [(step, 1.0 / step) for step in range(1, 1201)]
    assert _history(client, run_id, "val/top1_err") == [(1200, 0.25)]
    assert {a.path for a in client.list_artifacts(run_id)} == {"config.yaml", "final_metrics.json", "notes.txt"}
    # Artifacts live in the run directory, not in ./mlruns of whatever directory training ran in.
    artifacts = run_dir / "mlartifacts" / run_id / "artifacts"
    assert Path(run.info.artifact_uri.removeprefix("file://")) == artifacts.resolve()
    assert yaml.safe_load((artifacts / "config.yaml").read_text()) == to_dict(config)
    assert json.loads((artifacts / "final_metrics.json").read_text()) == {"val/top1_err": 0.25, "epochs": 90}
    # The local copy holds the same history.
    assert metric_history(run_dir / "metrics.jsonl")["train/loss"] == loss


def test_resumed_run_continues_the_same_mlflow_run(tmp_path):
    cfg = TrackingConfig(experiment="unit")
    first = build_tracker(cfg, run_dir=tmp_path, rank=0, run_name="r", resume_run_id=None)
    first.log_params({"optim.lr": 0.1, "train.max_epochs_override": None})
    for step in range(10):
        first.log_metrics({"train/loss": float(step)}, step=step)
    run_id = first.run_id
    first.close("KILLED")  # preempted

    second = build_tracker(cfg, run_dir=tmp_path, rank=0, run_name="r", resume_run_id=run_id)
    assert second.run_id == run_id
    second.log_params({"optim.lr": 0.1, "train.max_epochs_override": 95})  # a changed override
    for step in range(10, 20):
        second.log_metrics({"train/loss": float(step)}, step=step)
    second.close("FINISHED")

    client = _client(tmp_path)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert _history(client, run_id, "train/loss") == [(s, float(s)) for s in range(20)]
    assert run.data.params["train.max_epochs_override"] == "None"  # MLflow params never change...
    assert run.data.tags["dtrain.resume_param.train.max_epochs_override"] == "95"  # ...the new value is kept
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_unreachable_server_never_raises_warns_once_and_keeps_jsonl(tmp_path, monkeypatch, caplog):
    from dtrain.tracking import mlflow_tracker

    monkeypatch.setattr(mlflow_tracker, "CLOSE_RETRY_SECONDS", 0.0)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cfg = TrackingConfig(uri=f"http://127.0.0.1:{free_port()}", flush_every_seconds=0.0)
    with caplog.at_level(logging.WARNING, logger="dtrain.tracking"):
        tracker = build_tracker(cfg, run_dir=tmp_path, rank=0, run_name="r", resume_run_id=None)
        tracker.log_params({"optim.lr": 0.1})
        for step in range(1, 2001):
            tracker.log_metrics({"train/loss": step * 0.5}, step=step)
            tracker.flush()
        tracker.log_text("cfg", "config.yaml")
        tracker.close("FINISHED")
    unreachable = [r for r in caplog.records if " is unreachable " in r.getMessage()]
    assert len(unreachable) == 1 and "\n" not in unreachable[0].getMessage()
    assert metric_history(tmp_path / "metrics.jsonl")["train/loss"] == [(s, s * 0.5) for s in range(1, 2001)]
    assert (tmp_path / "artifacts" / "config.yaml").read_text() == "cfg"
    assert [r["status"] for r in read_records(tmp_path / "metrics.jsonl") if r["type"] == "status"] == ["FINISHED"]


class FakeClient:
    """MlflowClient's methods the tracker uses; `down` makes every call fail like a dead server."""

    def __init__(self):
        self.down = False
        self.batches: list[dict] = []
        self.terminated: list[str] = []

    def _check(self):
        if self.down:
            raise ConnectionError("connection refused")

    def get_experiment_by_name(self, name):
        self._check()
        return SimpleNamespace(experiment_id="1", lifecycle_stage="active")

    def create_run(self, experiment_id, run_name=None, tags=None):
        self._check()
        return SimpleNamespace(info=SimpleNamespace(run_id="run-1", experiment_id=experiment_id),
                               data=SimpleNamespace(params={}))

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        self._check()
        self.batches.append({"metrics": list(metrics), "params": list(params), "tags": list(tags)})

    def set_terminated(self, run_id, status):
        self._check()
        self.terminated.append(status)

    def sent(self, kind):
        return [b[kind] for b in self.batches if b[kind]]


def _fake_tracker(tmp_path, client, **kwargs):
    from dtrain.tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(uri="http://fake", experiment="e", run_dir=tmp_path, run_name="r", client=client,
                         flush_every_seconds=3600, **kwargs)


def test_a_server_run_links_to_its_page_on_the_server(tmp_path):
    tracker = _fake_tracker(tmp_path, FakeClient())
    assert tracker.run_link == "http://fake/#/experiments/1/runs/run-1?workflowType=machine_learning"
    tracker.close()


def test_no_link_while_the_server_is_unreachable(tmp_path):
    client = FakeClient()
    client.down = True
    tracker = _fake_tracker(tmp_path, client)
    assert tracker.run_link is None
    tracker.close("KILLED")


@pytest.mark.parametrize("count", [1, 999, 1000, 2500])
def test_metrics_go_out_in_batches_of_at_most_1000(tmp_path, count):
    client = FakeClient()
    tracker = _fake_tracker(tmp_path, client)
    tracker.log_params({f"p{i}": i for i in range(250)})
    for step in range(count):
        tracker.log_metrics({"train/loss": float(step)}, step=step)
    tracker.close()
    metric_batches = client.sent("metrics")
    assert len(metric_batches) == math.ceil(count / 1000)
    assert [m.step for batch in metric_batches for m in batch] == list(range(count))
    assert [len(b) for b in client.sent("params")] == [100, 100, 50]
    assert client.terminated == ["FINISHED"]


def test_outage_buffers_then_delivers_everything_once_back(tmp_path, monkeypatch, caplog):
    from dtrain.tracking import mlflow_tracker

    monkeypatch.setattr(mlflow_tracker, "RETRY_FIRST_SECONDS", 0.0)
    client = FakeClient()
    tracker = _fake_tracker(tmp_path, client, max_buffered_metrics=5000)
    client.down = True
    with caplog.at_level(logging.WARNING, logger="dtrain.tracking"):
        for step in range(1200):
            tracker.log_metrics({"loss": float(step)}, step=step)
        assert tracker.pending_metrics == 1200
        client.down = False
        tracker.flush()
    assert tracker.pending_metrics == 0
    assert [m.step for batch in client.sent("metrics") for m in batch] == list(range(1200))
    messages = [r.getMessage() for r in caplog.records]
    assert sum(" is unreachable " in m for m in messages) == 1 and any("reachable again" in m for m in messages)


def test_outage_buffer_is_bounded_and_jsonl_keeps_everything(tmp_path):
    client = FakeClient()
    tracker = _fake_tracker(tmp_path, client, max_buffered_metrics=1500)
    client.down = True
    for step in range(4000):
        tracker.log_metrics({"loss": float(step)}, step=step)
    assert tracker.pending_metrics == 1500
    client.down = False
    tracker.close()
    assert [m.step for batch in client.sent("metrics") for m in batch] == list(range(2500, 4000))
    assert len(metric_history(tmp_path / "metrics.jsonl")["loss"]) == 4000


def test_jsonl_backend_records_everything(tmp_path):
    tracker = build_tracker(TrackingConfig(backend="jsonl"), run_dir=tmp_path, rank=0, run_name="r",
                            resume_run_id=None)
    assert isinstance(tracker, JsonlTracker) and tracker.run_id
    tracker.log_params({"optim.lr": 0.1})
    tracker.set_tags({"world_size": 2})
    tracker.log_metrics({"train/loss": 2.5, "train/lr": 0.1}, step=50)
    tracker.log_metrics({"train/loss": float("nan")}, step=100)  # a diverged run is still recorded
    tracker.log_text("a: 1\n", "config.yaml")
    tracker.close("FAILED")
    records = list(read_records(tmp_path / "metrics.jsonl"))
    assert [r["type"] for r in records] == ["run", "params", "tags", "metrics", "metrics", "artifact", "status"]
    assert records[1]["params"] == {"optim.lr": 0.1} and records[-1]["status"] == "FAILED"
    history = metric_history(tmp_path / "metrics.jsonl")
    assert history["train/lr"] == [(50, 0.1)] and math.isnan(history["train/loss"][1][1])
    assert (tmp_path / "artifacts" / "config.yaml").read_text() == "a: 1\n"


def test_none_backend_and_other_ranks_track_nothing(tmp_path):
    assert isinstance(build_tracker(TrackingConfig(backend="none"), run_dir=tmp_path, rank=0, run_name="r"),
                      NullTracker)
    tracker = build_tracker(TrackingConfig(backend="mlflow"), run_dir=tmp_path, rank=1, run_name="r")
    assert isinstance(tracker, NullTracker) and tracker.run_id is None
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.close()
    assert list(tmp_path.iterdir()) == []


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    assert resolve_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://head:5000")
    assert resolve_uri(None, tmp_path) == "http://head:5000"
    assert resolve_uri("http://other:5000", tmp_path) == "http://other:5000"


def test_aggregator_emits_window_means_aligned_to_the_global_step():
    aggregator = MetricAggregator(every=4, reductions={"lr": "last", "mem": "max"})
    emitted = {}
    for step in range(1, 10):
        out = aggregator.add(step, {"loss": float(step), "lr": 0.1 * step, "mem": 10.0 - step % 3})
        if out:
            emitted[step] = out
    assert list(emitted) == [4, 8]
    assert emitted[4] == {"loss": 2.5, "lr": pytest.approx(0.4), "mem": 10.0}
    assert emitted[8]["loss"] == 6.5
    assert aggregator.pop() == {"loss": 9.0, "lr": pytest.approx(0.9), "mem": 10.0}
    assert aggregator.pop() is None


def test_aggregator_accepts_tensors_without_per_step_conversion():
    torch = pytest.importorskip("torch")
    aggregator = MetricAggregator(every=2)
    assert aggregator.add(1, {"loss": torch.tensor(1.0)}) is None
    assert aggregator.add(2, {"loss": torch.tensor(2.0)}) == {"loss": 1.5}


def test_mlflow_server_command_print_only(tmp_path):
    from click.testing import CliRunner

    from dtrain.commands.mlflow_server import mlflow_server

    db = tmp_path / "srv" / "mlflow.db"
    result = CliRunner().invoke(mlflow_server, ["--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination",
                                                str(tmp_path / "art"), "--port", "5123", "--print-only"])
    assert result.exit_code == 0, result.output
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:5123" in result.output
    assert f"mlflow server --backend-store-uri sqlite:///{db}" in result.output and "--workers 1" in result.output
    assert not (tmp_path / "srv").exists()  # --print-only starts and creates nothing
    bad = CliRunner().invoke(mlflow_server, ["--backend-store-uri", "runs.db", "--print-only"])
    assert bad.exit_code == 2 and "not a database URI" in bad.output
