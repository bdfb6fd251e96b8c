"""The degradation experiment and a reproduction, end to end through the real trainer, on the
real digits (scikit-learn's scans, prepared by `dtrain prepare digits`). Minutes on 2 CPU cores."""

import json
import os
import subprocess
import sys

import pytest

from dtrain.tracking.jsonl import metric_history

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
    out, record = tmp_path / "deg", tmp_path / "record"
    command = ["experiment", "degradation", "--dataset-root", str(digits), "--depths", "20,32", "--seeds", "0,1",
               "--budget-iters", "8", "--out", str(out), "--record", str(record), "optim.batch_size=32"]
    result = dtrain(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "degradation.json").read_text())
    assert [n["name"] for n in summary["nets"]] == ["plain20", "plain32", "resnet20", "resnet32"]
    for net in summary["nets"]:
        assert [r["seed"] for r in net["runs"]] == [0, 1]
        for run in net["runs"]:
            assert run["iterations"] == 8 and run["trained_here"] is True and run["seconds"] > 0
            assert 0.0 <= run["final_train_err"] <= 100.0 and 0.0 <= run["final_test_err"] <= 100.0
            assert run["train_samples"] == 5 * 32  # the one full window (tracking.metrics_every_iters=5)
            assert run["test_samples"] == 359  # the digits' validation split
        # two seeds are two runs from scratch (train.seed): their own directories, different curves
        seed0, seed1 = (out / "runs" / f"{net['name']}-seed{seed}" / "metrics.jsonl" for seed in (0, 1))
        assert metric_history(seed0)["train/loss"] != metric_history(seed1)["train/loss"]
    # Option A ResNets have exactly the parameters of the plain nets (R1 sec. 4.2).
    params = {n["name"]: n["params"] for n in summary["nets"]}
    assert params["plain20"] == params["resnet20"] and params["plain32"] == params["resnet32"]
    table = (record / "degradation.md").read_text()
    assert "| plain32 | 32 | 0.46M | 8 | 2 |" in table and "deeper = higher training error?" in table
    assert "--seeds 0,1 --budget-iters 8" in table and "8 of 8 runs trained from scratch" in table
    assert (out / "degradation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (record / "degradation.svg").read_text().lstrip().startswith("<?xml")
    assert (out / "degradation.csv").read_text().startswith("name,kind,depth,params,seeds,train_err_mean")
    assert sorted(p.name for p in (record / "curves").iterdir()) == sorted(
        f"{kind}{depth}-seed{seed}.metrics.jsonl" for kind in ("plain", "resnet") for depth in (20, 32)
        for seed in (0, 1))

    # the same command again: the runs exist now, they are refused, not silently reused
    again = dtrain(*command, cwd=tmp_path)
    assert again.returncode != 0 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert (out / "runs" / "plain20-seed0" / "metrics.jsonl").is_file()
    # tabulating them is allowed (same settings), and says they were not trained by that invocation
    tabulated = dtrain(*command, "--no-train", cwd=tmp_path)
    assert tabulated.returncode == 0, tabulated.stdout + tabulated.stderr
    assert "0 of 8 runs trained from scratch" in (out / "degradation.md").read_text()


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
