"""The MLflow pages a team opens, rendered by a real (headless) browser: the run page from the
printed link (the run's name, the "Model training" view, the training curves), its system metrics,
and the registered model's page (its validation errors, dataset and registry version).

Needs Debian's `chromium` (`make test-ui` installs it, ~10 s here). With DTRAIN_DOCS_IMG=DIR the
pages' PNGs are also written there (README's docs/img/mlflow-*.png come from this test).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from processes import free_port

from dtrain.resolve import load_config
from dtrain.training import train_config

RUN_NAME = "digits-resnet20-demo"
REGISTERED = "digits-resnet20"
# page -> the README's picture of it
DOCS_IMAGES = {"run": "mlflow-run-page.png", "system": "mlflow-system-metrics.png", "model": "mlflow-logged-model.png"}
TINY = ["data.loader=synthetic", "data.synthetic_samples=64", "data.synthetic_image_size=16",
        "data.crop_size=16", "data.val_resize=16", "data.val_crop=16", "data.workers=0",
        "optim.batch_size=8", "eval.batch_size=16", "schedule.epochs=4", "schedule.milestones=[2]",
        "tracking.metrics_every_iters=2", "train.log_every_iters=8", f"tracking.run_name={RUN_NAME}",
        "tracking.system_metrics_interval=0.5", f"tracking.register_model={REGISTERED}"]
SERVER_START_SECONDS = 180  # mlflow server takes ~40 s to start on a loaded 2-core machine
# Chromium's virtual time runs the page's timers without waiting; compositing every stage before
# the capture is what makes the lazily drawn charts appear in it.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1600,1000",
                  "--run-all-compositor-stages-before-draw", "--virtual-time-budget=20000"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("Debian's chromium is not installed: `make test-ui` (or apt-get install chromium) to run this")
    return found


def _wait_for_server(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"mlflow server not up after {SERVER_START_SECONDS} s")


def _browse(chromium: str, url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *CHROMIUM_FLAGS, *extra, url], capture_output=True, text=True, timeout=180)


def _registered_model_id(db: Path) -> str:
    from mlflow.tracking import MlflowClient

    (version,) = MlflowClient(tracking_uri=f"sqlite:///{db}").search_model_versions(f"name='{REGISTERED}'")
    return version.source.removeprefix("models:/")


@pytest.mark.slow  # ~1-2 min: a short run, an MLflow server start, five page loads
def test_run_system_metrics_and_model_pages_show_what_the_run_recorded(tmp_path, monkeypatch):
    chromium = _chromium()
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    outcome = train_config(load_config("digits_resnet20", [*TINY, f"run_dir={tmp_path}"]))
    assert outcome.exit_code == 0
    link = outcome.result.run_link.split("then open ")[-1]  # "mlflow ui ...  then open URL"
    model_id = _registered_model_id(tmp_path / "mlflow.db")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    run_page = link.replace("http://127.0.0.1:5000", base)
    experiment = run_page.split("/runs/")[0]
    pages = {"run": run_page.replace("?", "/model-metrics?"), "system": run_page.replace("?", "/system-metrics?"),
             "model": f"{experiment}/models/{model_id}?workflowType=machine_learning"}
    doms, pngs = {}, {}
    try:
        _wait_for_server(base, server)
        for name, page in pages.items():
            doms[name] = _browse(chromium, page, "--dump-dom").stdout
            pngs[name] = tmp_path / f"{name}.png"
            _browse(chromium, page, f"--screenshot={pngs[name]}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    run, system, model = doms["run"], doms["system"], doms["model"]
    assert RUN_NAME in run
    assert "train/loss" in run and "js-plotly-plot" in run  # the loss curve is drawn (plotly)
    # The "Model training" view (its side bar has the model registry; the GenAI view's has evaluation runs).
    assert "Model registry" in run and "Evaluation runs" not in run
    # System metrics are drawn without being asked for (the charts below the fold are drawn lazily).
    assert "cpu_utilization_percentage" in system and "js-plotly-plot" in system
    # The registered model's page: its validation errors on the validation dataset, its version.
    assert "val/top1_err" in model and "val/top5_err" in model and "Metrics (2)" in model
    assert "Datasets used" in model and "synthetic" in model and REGISTERED in model and RUN_NAME in model
    for png in pngs.values():
        assert png.is_file() and png.stat().st_size > 20_000
    if os.environ.get("DTRAIN_DOCS_IMG"):
        for name, png in pngs.items():
            shutil.copyfile(png, Path(os.environ["DTRAIN_DOCS_IMG"]) / DOCS_IMAGES[name])
