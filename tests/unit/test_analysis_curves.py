"""`dtrain plot` and the MLflow side of `dtrain reproduce`, against a store the test logs itself
(one SQLite store for the whole module: creating one costs seconds)."""

import json
import math
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dtrain.analysis.curves import load_curves, resolve_run
from dtrain.errors import DtrainError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def log_fake_run(client, artifacts, model_name, train_errors, test_errors, every=10, experiment="dtrain"):
    """A run as the trainer logs it: train/top1_err every `every` iterations, val/top1_err less often.
    Artifacts go to `artifacts` (MLflow's default would be ./mlruns in the working directory)."""
    from mlflow.entities import Metric, Param

    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=artifacts.as_uri())
    run = client.create_run(exp_id, run_name=f"{model_name}-run")
    now = int(time.time() * 1000)
    metrics = [Metric("train/top1_err", v, now, (i + 1) * every) for i, v in enumerate(train_errors)]
    metrics += [Metric("val/top1_err", v, now, (i + 1) * every * 5) for i, v in enumerate(test_errors)]
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param("model.name", model_name)])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A run dir (mlflow.db + final_metrics.json naming resnet20's run) with two runs in its store."""
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    plain = [90 * math.exp(-i / 30) + 8 for i in range(50)]
    resnet = [90 * math.exp(-i / 12) + 2 for i in range(50)]
    artifacts = run_dir / "mlartifacts"
    ids = {"resnet20": log_fake_run(client, artifacts, "resnet20", resnet, [v + 3 for v in resnet[4::5]]),
           "plain20": log_fake_run(client, artifacts, "plain20", plain, plain[4::5])}  # the newest run
    (run_dir / "final_metrics.json").write_text(json.dumps({"run_id": ids["resnet20"]}))
    return run_dir, uri, ids


def test_run_dir_resolves_to_the_run_the_trainer_recorded(store):
    run_dir, uri, ids = store
    ref = resolve_run(str(run_dir))
    assert ref.run_id == ids["resnet20"] and ref.tracking_uri == uri


def test_curves_come_back_in_iteration_order_and_percent(store):
    run_dir, _, _ = store
    curves = load_curves(resolve_run(str(run_dir)))
    assert curves.label == "resnet20"
    steps = [s for s, _ in curves.train]
    assert steps == sorted(steps) and steps[0] == 10 and steps[-1] == 500
    assert len(curves.test) == 10
    assert curves.train[0][1] == pytest.approx(92.0)
    assert curves.final_test_error() == pytest.approx(curves.test[-1][1])
    assert curves.final_train_error() == pytest.approx(sum(v for _, v in curves.train[-3:]) / 3)


def test_plot_writes_readable_png_and_svg(store, tmp_path):
    from dtrain.commands.plot import plot

    _, uri, ids = store
    out = tmp_path / "fig" / "curves"
    result = CliRunner().invoke(plot, [ids["plain20"], ids["resnet20"], "--tracking-uri", uri, "--out", str(out)])
    assert result.exit_code == 0, result.output
    png, svg = out.with_suffix(".png"), out.with_suffix(".svg")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "plain20" in text and "resnet20" in text  # legend labels (SVG text kept as text)
    assert "resnet20: 500 iterations" in result.output


def test_report_is_logged_to_the_run(store):
    from mlflow.tracking import MlflowClient

    from dtrain.analysis.paper_numbers import ROWS
    from dtrain.analysis.reproduction import ARTIFACT_PATH, log_report
    from dtrain.resolve import load_config

    run_dir, uri, ids = store
    config = load_config("cifar10_resnet20", [f"tracking.uri={uri}"])
    assert log_report(config, run_dir, ids["resnet20"], "# report 8.75\n", ROWS["r1-table6-resnet20"])
    client = MlflowClient(tracking_uri=uri)
    local = client.download_artifacts(ids["resnet20"], ARTIFACT_PATH, str(run_dir))
    assert Path(local).read_text() == "# report 8.75\n"
    assert client.get_run(ids["resnet20"]).data.tags["dtrain.reproduce"] == "r1-table6-resnet20"


def test_bad_runs_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(DtrainError, match="neither mlflow.db nor metrics.jsonl"):
        resolve_run(str(tmp_path))
    with pytest.raises(DtrainError, match="neither a run directory"):
        resolve_run("not-a-run")
    with pytest.raises(DtrainError, match="needs --tracking-uri"):
        resolve_run("0" * 32)


def test_a_run_trained_with_the_jsonl_backend_reads_back_from_metrics_jsonl(tmp_path, monkeypatch):
    """tracking.backend=jsonl (or no MLflow installed): RUN_DIR/metrics.jsonl is the record; a
    resumed run that logged step 20 twice keeps the later value; a line cut short is skipped."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lines = [{"type": "run", "run_id": "abc", "run_name": "plain56", "backend": "jsonl"},
             {"type": "params", "params": {"model.name": "plain56"}},
             {"type": "metrics", "step": 10, "metrics": {"train/top1_err": 0.9}},
             {"type": "metrics", "step": 20, "metrics": {"train/top1_err": 0.8, "val/top1_err": 0.85}},
             {"type": "metrics", "step": 20, "metrics": {"train/top1_err": 0.7}}]
    text = "\n".join(json.dumps(line) for line in lines) + '\n{"type": "metr'
    (tmp_path / "metrics.jsonl").write_text(text)
    curves = load_curves(resolve_run(str(tmp_path)))
    assert curves.label == "plain56"
    assert curves.train == [(10, pytest.approx(90.0)), (20, pytest.approx(70.0))]
    assert curves.test == [(20, pytest.approx(85.0))]
