"""One override syntax on every command that takes one: positional KEY=VALUE, with --set KEY=VALUE
as its alias (train, eval and show-config are tested in test_config_values.py; here `dtrain
reproduce` and `dtrain k8s render`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dtrain.analysis import reproduction
from dtrain.analysis.paper_numbers import get_row
from dtrain.cli import cli
from dtrain.resolve import load_config

ROOT = Path(__file__).resolve().parents[2]
WORKED_EXAMPLE = ROOT / "launch" / "k8s" / "values" / "resnet200-preact-4node.yaml"
ROW = "r1-table6-resnet20"


@pytest.fixture()
def reproduce_calls(monkeypatch, tmp_path) -> list:
    """`dtrain reproduce` with the training replaced by a record of the options it would run with."""
    calls = []

    def record(row, opts, echo):
        calls.append((row, opts))
        return tmp_path / "report.md", "report"

    monkeypatch.setattr(reproduction, "reproduce", record)
    return calls


def test_reproduce_takes_positional_overrides_like_train(reproduce_calls) -> None:
    runner = CliRunner()
    positional = runner.invoke(cli, ["reproduce", ROW, "optim.batch_size=64", "schedule.warmup_iters=7",
                                     "--budget-iters", "8"])
    aliased = runner.invoke(cli, ["reproduce", ROW, "--set", "optim.batch_size=64", "--budget-iters", "8",
                                  "--set", "schedule.warmup_iters=7"])
    assert positional.exit_code == aliased.exit_code == 0, positional.output + aliased.output
    (row, first), (_, second) = reproduce_calls
    assert first.overrides == second.overrides == ("optim.batch_size=64", "schedule.warmup_iters=7")
    # ... and they reach the configuration the row's run trains with.
    config = load_config(row.recipe, reproduction.run_overrides(row, first))
    assert config.optim.batch_size == 64 and config.schedule.warmup_iters == 7


def test_reproduce_applies_set_after_positional(reproduce_calls) -> None:
    result = CliRunner().invoke(cli, ["reproduce", ROW, "optim.lr=0.2", "--set", "optim.lr=0.3"])
    assert result.exit_code == 0, result.output
    config = load_config(get_row(ROW).recipe, reproduction.run_overrides(get_row(ROW), reproduce_calls[0][1]))
    assert config.optim.lr == 0.3


@pytest.mark.parametrize("args, message", [
    ([ROW, "optim.lr"], "override 'optim.lr' must look like key=value"),
    (["optim.lr=0.2"], "name a table row"),
])
def test_reproduce_bad_overrides_are_one_line_errors(reproduce_calls, args, message) -> None:
    result = CliRunner().invoke(cli, ["reproduce", *args])
    assert result.exit_code == 2 and message in result.output and not reproduce_calls


def _render(tmp_path: Path, name: str, *args: str) -> tuple[int, str, dict[str, str]]:
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["k8s", "render", "--values", str(WORKED_EXAMPLE), "--out", str(out),
                                      "--no-validate", *args])
    files = {p.name: p.read_text() for p in sorted(out.glob("*.yaml"))} if out.is_dir() else {}
    return result.exit_code, result.output, files


def test_k8s_render_takes_positional_values_with_set_as_alias(tmp_path: Path) -> None:
    code, output, positional = _render(tmp_path, "positional", "nodes=2", "overrides.optim.lr=0.05")
    assert code == 0, output
    code, output, aliased = _render(tmp_path, "aliased", "--set", "nodes=2", "--set", "overrides.optim.lr=0.05")
    assert code == 0, output
    assert positional == aliased and "world size 16" in output  # 2 nodes x 8
    assert '"optim.lr=0.05"' in positional["pytorchjob.yaml"]


def test_k8s_render_points_a_bare_config_key_at_overrides(tmp_path: Path) -> None:
    code, output, files = _render(tmp_path, "bare", "optim.lr=0.05")
    assert code == 2 and not files
    assert "optim.lr is a training config key, not a chart value: write overrides.optim.lr=0.05" in output
    code, output, _ = _render(tmp_path, "typo", "nodez=2")
    assert code == 2 and "unknown value nodez (did you mean nodes?)" in output


def test_k8s_render_reads_a_value_as_every_override_is_read(tmp_path: Path) -> None:
    # YAML 1.2, as `dtrain train` reads the same text: `no` stays a run name, `1e-3` is a number.
    code, output, files = _render(tmp_path, "typed", "overrides.tracking.run_name=no", "overrides.optim.lr=1e-3")
    assert code == 0, output
    job = files["pytorchjob.yaml"]
    assert '"tracking.run_name=no"' in job and "optim.lr=0.001" in job
