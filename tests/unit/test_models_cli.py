"""`dtrain models`: the table and the JSON a script reads."""

from __future__ import annotations

import json

from click.testing import CliRunner

from dtrain.cli import cli


def _run(*args: str):
    return CliRunner().invoke(cli, ["models", *args])


def test_json_lists_the_counted_nets() -> None:
    result = _run("resnet2?", "resnet18", "--format", "json")  # shell pattern + substring
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert sorted(rows) == ["resnet18", "resnet18_preact", "resnet20"]
    assert rows["resnet20"] == {
        "name": "resnet20",
        "family": "cifar",
        "depth": 20,
        "native_input": 32,
        "paper": "R1",
        "default_num_classes": 10,
        "params": 269722,
        "multiply_adds": 40551040,
    }
    assert rows["resnet18"]["params"] == 11689512  # torchvision's count
    assert abs(rows["resnet18"]["multiply_adds"] / 1.8e9 - 1) < 0.02  # R1 Table 1


def test_table_has_one_row_per_net() -> None:
    result = _run("plain[2-5]?", "--family", "cifar")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["name", "family", "depth", "paper", "input", "params", "mult-adds"]
    assert [line.split()[0] for line in lines[1:]] == ["plain20", "plain32", "plain44", "plain56"]
    assert lines[1].split()[1:] == ["cifar", "20", "R1", "32", "0.27M", "40.6M"]


def test_unknown_name_is_a_one_line_usage_error() -> None:
    result = _run("resnet5O")
    assert result.exit_code == 2
    assert "Error: no model matches 'resnet5O'. Did you mean: " in result.output
    assert "resnet50" in result.output.splitlines()[-1]


def test_options_lists_unit_types_and_shortcut_modes() -> None:
    result = _run("--options")
    assert result.exit_code == 0
    assert "full_preact" in result.output and "exclusive_gating" in result.output
