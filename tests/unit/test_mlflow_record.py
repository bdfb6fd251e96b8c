"""What a team reads back from a run's MLflow record (a real SQLite store, read with MlflowClient):
system metrics without asking for them, models that compare by their validation error, runs that
can be told apart by name."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime
from pathlib import Path

import pytest
import tomllib

from dtrain.config import TrackingConfig
from dtrain.tracking import build_tracker

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]
SAMPLING_SECONDS = 0.25


@pytest.fixture(autouse=True)
def _local_store_only(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", raising=False)


def _client(run_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{run_dir.resolve() / 'mlflow.db'}")


def _system_metrics(run_dir: Path, run_id: str) -> set[str]:
    return {key for key in _client(run_dir).get_run(run_id).data.metrics if key.startswith("system/")}


def test_psutil_and_nvml_bindings_are_dependencies():
    """What MLflow's system-metrics monitor imports comes with `pip install dtrain`."""
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower() for requirement in requirements}
    assert {"psutil", "nvidia-ml-py"} <= names


def test_system_metrics_are_recorded_by_default_and_off_with_the_switch(tmp_path, caplog):
    runs = {}
    with caplog.at_level(logging.WARNING):
        for name, switch in (("default", {}), ("off", {"system_metrics": False})):
            cfg = TrackingConfig(system_metrics_interval=SAMPLING_SECONDS, **switch)
            tracker = build_tracker(cfg, run_dir=tmp_path / name, rank=0, run_name=name)
            time.sleep(6 * SAMPLING_SECONDS)  # several samples' worth of training
            tracker.close()
            runs[name] = tracker.run_id
    assert not [r for r in caplog.records if "system metrics are off" in r.getMessage()]
    recorded = _system_metrics(tmp_path / "default", runs["default"])
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
            "system/system_memory_usage_percentage", "system/disk_usage_percentage"} <= recorded
    assert _system_metrics(tmp_path / "off", runs["off"]) == set()


def test_logged_models_carry_their_validation_metrics_on_the_dataset_and_the_best_is_registered(tmp_path):
    """The Models view compares logged models by val/top1_err on the validation dataset; the
    registered version is the best model, linked to its logged model and to the run."""
    import torch

    from dtrain.tracking.base import DatasetRecord

    val_digest = "b" * 32
    tracker = build_tracker(TrackingConfig(system_metrics=False), run_dir=tmp_path, rank=0, run_name="models")
    tracker.log_params({"model.name": "tiny"})
    tracker.log_datasets([DatasetRecord("digits", "training", "a" * 32, "/data/digits", {}),
                          DatasetRecord("digits", "validation", val_digest, "/data/digits", {})])
    evaluations = {4: (30.0, 5.0), 8: (20.0, 2.0), 12: (25.0, 3.0)}  # step: (top-1, top-5 error)
    for step, (top1, top5) in evaluations.items():
        tracker.log_metrics({"val/top1_err": top1, "val/top5_err": top5, "train/loss": 1.0 / step}, step=step)
    tracker.log_metrics({"val/best_top1_err": 20.0}, step=12)
    network = torch.nn.Linear(4, 2)
    tracker.log_model(network, torch.zeros(1, 4), "model", evaluated_at=12)
    tracker.log_model(network, torch.zeros(1, 4), "best_model", register_as="tiny-net", evaluated_at=8)
    run_id = tracker.run_id
    tracker.close()

    client = _client(tmp_path)
    run = client.get_run(run_id)
    models = {m.name: m for m in (client.get_logged_model(o.model_id) for o in run.outputs.model_outputs)}
    assert set(models) == {"model", "best_model"}

    def metrics(name):
        return {(m.key, m.step, m.value, m.dataset_name, m.dataset_digest) for m in models[name].metrics}

    assert metrics("model") == {("val/top1_err", 12, 25.0, "digits", val_digest),
                                ("val/top5_err", 12, 3.0, "digits", val_digest)}
    assert metrics("best_model") == {("val/top1_err", 8, 20.0, "digits", val_digest),
                                     ("val/top5_err", 8, 2.0, "digits", val_digest)}
    assert all(m.params["model.name"] == "tiny" and m.source_run_id == run_id for m in models.values())
    assert {o.model_id: o.step for o in run.outputs.model_outputs} == {models["model"].model_id: 12,
                                                                       models["best_model"].model_id: 8}
    # What the Models view sorts by: the best first.
    ranked = client.search_logged_models([run.info.experiment_id], order_by=[
        {"field_name": "metrics.val/top1_err", "ascending": True, "dataset_name": "digits"}])
    assert [m.name for m in ranked] == ["best_model", "model"]
    # The run's own charts get no second point.
    history = client.get_metric_history(run_id, "val/top1_err")
    assert sorted((m.step, m.value) for m in history) == [(4, 30.0), (8, 20.0), (12, 25.0)]
    # One registry version, the best model of this run, listed on the model's page.
    best_id = models["best_model"].model_id
    versions = client.search_model_versions("name='tiny-net'")
    assert [(str(v.version), v.source, v.run_id) for v in versions] == [("1", f"models:/{best_id}", run_id)]
    assert json.loads(client.get_logged_model(best_id).tags["mlflow.modelVersions"]) == [
        {"name": "tiny-net", "version": 1}]


@pytest.mark.parametrize("overrides, message", [
    (["tracking.register_model=team/digits"], "tracking.register_model='team/digits' is not a model registry name"),
    (["tracking.register_model= "], "is not a model registry name"),
    (["tracking.backend=jsonl", "tracking.register_model=digits"], "needs tracking.backend=mlflow"),
    (["tracking.log_model=false", "tracking.register_model=digits"], "tracking.log_model=true"),
    (["tracking.register_as=digits"], "did you mean tracking.register_model?"),
])
def test_a_registry_name_that_cannot_work_is_refused_before_training(overrides, message):
    from dtrain.errors import ConfigError
    from dtrain.resolve import load_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("digits_resnet20", overrides)


def test_runs_of_one_recipe_have_names_of_their_own_and_the_recipe_as_tag(tmp_path):
    """Two runs of a recipe started the same minute: distinct, readable names (recipe, start time,
    4 hex digits); the recipe is the tag to filter on. tracking.run_name still wins."""
    from dtrain.builders import start_tracker
    from dtrain.distributed.context import DistContext
    from dtrain.resolve import load_config

    base = ["data.loader=synthetic", f"run_dir={tmp_path}", "tracking.system_metrics=false"]
    run_ids = []
    for overrides in ([], [], ["tracking.run_name=baseline"]):
        tracker = start_tracker(load_config("digits_resnet20", [*base, *overrides]), DistContext())
        run_ids.append(tracker.run_id)
        tracker.close()
    client = _client(tmp_path)
    runs = [client.get_run(run_id) for run_id in run_ids]
    first, second, named = (run.info.run_name for run in runs)
    for name in (first, second):
        recipe, started, suffix = re.fullmatch(r"(.+)-(\d{4}-\d{4})-([0-9a-f]{4})", name).groups()
        assert recipe == "digits_resnet20"
        datetime.strptime(started, "%m%d-%H%M")  # month, day, hour, minute
    assert first != second and named == "baseline"
    assert [run.data.tags["recipe"] for run in runs] == ["digits_resnet20"] * 3


def test_system_metrics_go_on_after_a_failed_request_stopped_mlflow_s_monitor(tmp_path, monkeypatch):
    """MLflow's monitor ends its thread at its first failed request (a server that is down); the
    tracker starts a new one at its next send, continuing the steps of the system/ charts."""
    from mlflow.tracking import MlflowClient

    tracker = build_tracker(TrackingConfig(system_metrics_interval=SAMPLING_SECONDS), run_dir=tmp_path, rank=0,
                            run_name="monitor")
    time.sleep(4 * SAMPLING_SECONDS)
    with monkeypatch.context() as outage:  # the monitor asks for the run after every sample
        outage.setattr(MlflowClient, "get_run", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("refused")))
        time.sleep(4 * SAMPLING_SECONDS)
    back = time.time() * 1000
    tracker.flush()
    time.sleep(6 * SAMPLING_SECONDS)
    tracker.close()
    history = _client(tmp_path).get_metric_history(tracker.run_id, "system/cpu_utilization_percentage")
    steps = sorted(m.step for m in history)
    assert steps == list(range(len(steps)))  # no step twice, none missing
    assert len([m for m in history if m.timestamp > back]) >= 2  # sampled again after the outage
