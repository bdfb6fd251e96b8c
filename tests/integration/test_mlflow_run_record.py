"""A finished run, read back with MlflowClient as a team would: the model loads and answers like
the checkpoint, the dataset is a run input, system metrics were sampled, the model is registered,
the models carry their validation errors, params are the ones that apply, and the printed link
points at the run."""

from __future__ import annotations

import time

import pytest
import torch

from dtrain.builders import build_model
from dtrain.checkpoint import atomic_load  # weights only, like every dtrain reader
from dtrain.resolve import load_config
from dtrain.training import train_config

TINY = ["data.loader=synthetic", "data.synthetic_samples=32", "data.synthetic_image_size=16",
        "data.crop_size=16", "data.val_resize=16", "data.val_crop=16", "data.workers=0",
        "optim.batch_size=8", "eval.batch_size=16", "schedule.epochs=2", "schedule.milestones=[1]",
        "tracking.metrics_every_iters=2", "train.log_every_iters=2"]
SAMPLING_SECONDS = 0.5


@pytest.mark.slow  # ~30-60 s here: MLflow's store, two logged models and the registry
def test_finished_run_reads_back_with_model_dataset_system_metrics_and_registry(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", raising=False)
    cfg = load_config("digits_resnet20", [*TINY, f"run_dir={tmp_path}", "tracking.register_model=digits-r20",
                                          f"tracking.system_metrics_interval={SAMPLING_SECONDS}"])
    started = time.monotonic()
    outcome = train_config(cfg)
    assert outcome.exit_code == 0
    assert time.monotonic() - started > 2 * SAMPLING_SECONDS  # longer than the sampling interval
    result = outcome.result
    uri = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"

    # The printed header and summary hold a direct link to this run, after the `mlflow ui` command.
    out = capsys.readouterr().out
    link = (f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{result.run_id}"
            "?workflowType=machine_learning")
    header = next(line for line in out.splitlines() if line.startswith("dtrain rank 0 of 1 (no process group) |"))
    assert f"run dir {tmp_path.resolve()}" in header and link in header
    assert f"mlflow ui --backend-store-uri {uri}  then open {link}" in out

    logged = _assert_logged_models_match_checkpoints(client, run, result, cfg)

    # Each model carries the validation errors of its weights, on the validation split; the best
    # one (lowest val/top1_err) is registered under tracking.register_model.
    final = {m.key: m for m in logged["model"].metrics}
    assert final["val/top1_err"].value == pytest.approx(result.final.top1_err) and final["val/top1_err"].step == 8
    assert {m.dataset_name for m in logged["model"].metrics} == {"synthetic"}
    best = logged.get("best_model", logged["model"])
    best_top1 = {m.key: m.value for m in best.metrics}["val/top1_err"]
    assert best_top1 == pytest.approx(run.data.metrics["val/best_top1_err"])
    versions = client.search_model_versions("name='digits-r20'")
    assert [(v.run_id, v.source) for v in versions] == [(result.run_id, f"models:/{best.model_id}")]

    # The dataset is a run input, for training and validation.
    inputs = run.inputs.dataset_inputs
    contexts = sorted(tag.value for i in inputs for tag in i.tags if tag.key == "mlflow.data.context")
    assert contexts == ["training", "validation"] and {i.dataset.name for i in inputs} == {"synthetic"}

    # System metrics were sampled (CPU and memory at least).
    system = [key for key in run.data.metrics if key.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system

    # Params that apply to a synthetic, pad-crop-free, step-schedule run; no "final/" charts.
    params = run.data.params
    assert params["schedule.milestones"] == "[1]" and "data.synthetic_samples" in params
    assert "data.root" not in params and "data.ffcv_order" not in params and "tracking.experiment" not in params
    assert not [key for key in run.data.metrics if key.startswith("final/")]
    assert run.data.metrics["val/best_top1_err"] <= run.data.metrics["val/top1_err"]


def _assert_logged_models_match_checkpoints(client, run, result, cfg) -> dict:
    """The logged model gives the checkpoint's outputs; the checkpoint stays a path (tag), not a copy."""
    import mlflow

    checkpoint = run.data.tags["dtrain.checkpoint.last"]
    assert checkpoint == str(result.last_checkpoint.resolve())
    reference = build_model(cfg.model)
    reference.load_state_dict(atomic_load(checkpoint)["model"])
    logged = {m.name: m for m in (client.get_logged_model(o.model_id) for o in run.outputs.model_outputs)}
    assert logged["model"].experiment_id == run.info.experiment_id
    images = torch.randn(4, 3, 16, 16)
    loaded = mlflow.pytorch.load_model(f"models:/{logged['model'].model_id}")
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(images), reference.eval()(images), atol=1e-6)
    # The best checkpoint is logged too when it is an earlier one, with its own weights.
    best = run.data.tags["dtrain.checkpoint.best"]
    if atomic_load(best)["train_state"]["step"] != result.step:
        reference.load_state_dict(atomic_load(best)["model"])
        loaded = mlflow.pytorch.load_model(f"models:/{logged['best_model'].model_id}")
        with torch.no_grad():
            assert torch.allclose(loaded.eval()(images), reference.eval()(images), atol=1e-6)
    else:
        assert set(logged) == {"model"}
    signature = mlflow.models.get_model_info(f"models:/{logged['model'].model_id}").signature
    assert signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3, 16, 16)
    assert not any(a.path.endswith(".pt") for a in client.list_artifacts(result.run_id))
    return logged
