"""A short training run logs to MLflow what a user opens later: params, metric history, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtrain.resolve import load_config
from dtrain.tracking import applicable_params
from dtrain.training import train_config

TINY = ["data.loader=synthetic", "data.synthetic_samples=32", "data.synthetic_image_size=16",
        "data.crop_size=16", "data.val_resize=16", "data.val_crop=16", "data.workers=0",
        "optim.batch_size=8", "eval.batch_size=16", "schedule.epochs=2", "schedule.milestones=[1]",
        "tracking.metrics_every_iters=2", "train.log_every_iters=2"]


@pytest.mark.slow  # ~25-50 s here, most of it creating MLflow's SQLite store
def test_short_train_logs_params_metric_history_and_artifacts_to_mlflow(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config("digits_resnet20", [*TINY, f"run_dir={tmp_path}"])
    outcome = train_config(cfg)
    assert outcome.exit_code == 0
    result = outcome.result
    assert result.step == 8 and result.stopped == "finished"
    out = capsys.readouterr().out
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path.resolve()}/mlflow.db" in out
    assert "validation: top-1 error" in out

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve()}/mlflow.db")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    expected = {k: str(v) for k, v in applicable_params(cfg).items()}
    assert run.data.params["optim.lr"] == "0.1" and run.data.params["model.name"] == "resnet20"
    assert set(expected) <= set(run.data.params)
    loss = client.get_metric_history(result.run_id, "train/loss")
    assert [m.step for m in loss] == [2, 4, 6, 8]
    lr = client.get_metric_history(result.run_id, "train/lr")
    assert [round(m.value, 6) for m in lr] == [0.1, 0.1, 0.01, 0.01]  # /10 after epoch 1 (4 steps)
    top1 = client.get_metric_history(result.run_id, "val/top1_err")
    assert [m.step for m in top1] == [4, 8]
    assert result.final.top1_err == pytest.approx(top1[-1].value)
    for name in ("train/img_per_s", "train/data_time", "train/memory_mib", "val/top5_err"):
        assert client.get_metric_history(result.run_id, name), name
    assert run.data.tags["recipe"] == "digits_resnet20" and run.data.tags["world_size"] == "1"

    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "final_metrics.json"} <= artifacts
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    assert final["top1_err"] == pytest.approx(result.final.top1_err) and final["step"] == 8
    config_text = client.download_artifacts(result.run_id, "config.yaml", str(tmp_path / "dl"))
    assert "resnet20" in Path(config_text).read_text()
