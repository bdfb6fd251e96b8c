"""The degradation experiment and a reproduction, end to end through the real trainer, on the
real digits (scikit-learn's scans, prepared by `dtrain prepare digits`). Minutes on 2 CPU cores."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits") / "prepared"
    subprocess.run([sys.executable, "-m", "dtrain", "prepare", "digits", "--out", str(root), "--formats", "wds",
                    "--workers", "1", "--quiet"], check=True)
    return root


def dtrain(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "dtrain", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_degradation_command_trains_tabulates_and_plots(digits, tmp_path):
    out = tmp_path / "deg"
    result = dtrain("experiment", "degradation", "--dataset-root", str(digits), "--depths", "20,32",
                    "--budget-iters", "6", "--out", str(out), "optim.batch_size=32", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "degradation.json").read_text())
    assert [n["name"] for n in summary["nets"]] == ["plain20", "plain32", "resnet20", "resnet32"]
    for net in summary["nets"]:
        assert net["iterations"] == 6
        assert 0.0 <= net["final_train_err"] <= 100.0 and 0.0 <= net["final_test_err"] <= 100.0
    # Option A ResNets have exactly the parameters of the plain nets (R1 sec. 4.2).
    params = {n["name"]: n["params"] for n in summary["nets"]}
    assert params["plain20"] == params["resnet20"] and params["plain32"] == params["resnet32"]
    table = (out / "degradation.md").read_text()
    assert "| plain32 | 32 |" in table and "deeper = higher training error?" in table
    assert (out / "degradation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "degradation.csv").read_text().startswith("name,kind,depth,params")


def test_reproduce_writes_a_shortened_report_and_logs_it(digits, tmp_path):
    run_dir = tmp_path / "repro"
    result = dtrain("reproduce", "r1-table6-resnet20", "--data-root", str(digits), "--budget-iters", "5",
                    "--run-dir", str(run_dir), "--set", "optim.batch_size=32", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = (run_dir / "report.md").read_text()
    assert "**SHORTENED RUN**: 5 iterations" in report and "digits" in report
    assert "| top-1 error % | 8.75 |" in report and "| params | 0.27M | 0.27M |" in report
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert f"{final['top1_err']:.2f}" in report
    logged = list((run_dir / "mlartifacts").rglob("reproduction/report.md"))
    assert logged and logged[0].read_text() == report
