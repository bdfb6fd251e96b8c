"""`dtrain bench`: timing arithmetic, the JSON a figure is recorded with, and the CLI on CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from dtrain.bench.machine import MAX_QUIET_LOAD_PER_CORE, machine_environment, not_quiet_warning
from dtrain.bench.timing import environment, measure, time_iterations
from dtrain.commands.bench import bench

ROOT = Path(__file__).resolve().parents[2]


def test_warmup_is_excluded_and_the_median_of_repeats_is_reported():
    calls = []
    seconds = time_iterations(lambda: calls.append(1), device=torch.device("cpu"), warmup=3, iterations=4, repeats=5)
    assert len(calls) == 3 + 4 * 5 and len(seconds) == 5
    result = measure("x", lambda: None, batch_size=8, device=torch.device("cpu"), warmup=0, iterations=2, repeats=3)
    assert sorted(result.repeats_images_per_s)[1] == round(result.images_per_s, 1)


def test_environment_names_device_versions_and_load():
    env = environment(torch.device("cpu"))
    assert torch.__version__.startswith(env["versions"]["torch"])
    assert len(env["load_average"]) == 3 and env["cpu_count"] >= 1 and env["date_utc"].endswith("Z")
    assert {"commit", "load_per_core", "quiet"} <= env.keys()


@pytest.mark.parametrize("per_core, quiet", [(MAX_QUIET_LOAD_PER_CORE, True), (MAX_QUIET_LOAD_PER_CORE + 0.5, False)])
def test_a_busy_machine_is_flagged_not_quiet(monkeypatch, per_core, quiet):
    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (per_core * cores, 0.0, 0.0))
    env = machine_environment()
    assert env["load_per_core"] == pytest.approx(per_core) and env["quiet"] is quiet
    warning = not_quiet_warning(env)
    assert (warning is None) if quiet else warning.startswith(f"NOT QUIET: load {env['load_per_core']} per core")
    if not quiet:  # and `dtrain bench` prints it
        result = CliRunner().invoke(bench, ["model", "--model", "resnet20", "--batch", "2", "--image-size", "16",
                                            "--num-classes", "10", "--device", "cpu", "--warmup", "0", "--iters", "1",
                                            "--repeats", "1"])
        assert result.exit_code == 0 and warning in result.output.splitlines(), result.output


def test_model_and_overhead_commands_write_json(tmp_path):
    runner = CliRunner()
    small = ["--model", "resnet20", "--batch", "4", "--image-size", "16", "--num-classes", "10", "--device", "cpu",
             "--warmup", "1", "--iters", "1", "--repeats", "1"]
    result = runner.invoke(bench, ["model", *small, "--json", str(tmp_path / "model.json")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "model.json").read_text())
    assert payload["results"][0]["images_per_s"] > 0 and payload["environment"]["device"] == "cpu"
    result = runner.invoke(bench, ["overhead", *small, "--json", str(tmp_path / "overhead.json")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "overhead.json").read_text())
    assert [r["name"] for r in payload["results"]] == ["step:bare", "step:dtrain"]
    assert payload["dtrain_over_bare"] > 0


def test_amp_on_cpu_and_unknown_model_are_one_line_errors():
    runner = CliRunner()
    result = runner.invoke(bench, ["model", "--model", "resnet20", "--amp", "bf16", "--device", "cpu"])
    assert result.exit_code != 0 and "--amp bf16 needs a CUDA device" in result.output
    result = runner.invoke(bench, ["model", "--model", "resnet7", "--device", "cpu"])
    assert result.exit_code == 2 and "not a model" in result.output
