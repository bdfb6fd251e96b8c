"""What a team reads back from a run's MLflow record (a real SQLite store, read with MlflowClient):
system metrics without asking for them, models that compare by their validation error, runs that
can be told apart by name."""

from __future__ import annotations

import logging
import re
import time
import tomllib
from pathlib import Path

import pytest

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
