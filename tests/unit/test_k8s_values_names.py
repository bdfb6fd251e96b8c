"""`dtrain k8s` works where there is no checkout (a wheel install): `--values` takes the name of a
bundled values file, `dtrain k8s values` lists them, `dtrain k8s chart` says where the chart is,
and every hint names a file that exists here, not a checkout's relative path."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dtrain.cli import cli
from dtrain.commands import k8s as k8s_cmd
from dtrain.commands.k8s_files import bundled_values

WORKED = "resnet200-preact-4node"


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no launch/ in it, as after `pip install dtrain`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DTRAIN_HOME", raising=False)
    return tmp_path


def test_a_bundled_name_renders_what_its_file_renders(elsewhere: Path) -> None:
    path = bundled_values()[WORKED]
    assert k8s_cmd.load_values(WORKED) == k8s_cmd.load_values(path) == k8s_cmd.load_values(f"{WORKED}.yaml")
    by_name = CliRunner().invoke(cli, ["k8s", "render", "--values", WORKED, "--out", "by-name", "--no-validate"])
    by_path = CliRunner().invoke(cli, ["k8s", "render", "--values", str(path), "--out", "by-path", "--no-validate"])
    assert by_name.exit_code == 0 and by_path.exit_code == 0, by_name.output + by_path.output
    job = (elsewhere / "by-name" / "pytorchjob.yaml").read_text()
    assert job.split("\n", 1)[1] == (elsewhere / "by-path" / "pytorchjob.yaml").read_text().split("\n", 1)[1]
    assert job.startswith(f"# Values: {WORKED} (") and str(path) in job.splitlines()[0]


def test_values_lists_every_bundled_file_and_prints_one_path(elsewhere: Path) -> None:
    listing = CliRunner().invoke(cli, ["k8s", "values"])
    assert listing.exit_code == 0, listing.output
    names = [line.split()[0] for line in listing.output.splitlines()[: len(bundled_values())]]
    assert names == sorted(p.stem for p in (Path(k8s_cmd.k8s_dir()) / "values").glob("*.yaml")) and WORKED in names
    assert "4 nodes x 8 GPUs" in listing.output  # each with what it is for
    one = CliRunner().invoke(cli, ["k8s", "values", WORKED])
    assert one.exit_code == 0 and Path(one.output.strip()).is_file(), one.output


def test_chart_prints_the_installed_chart(elsewhere: Path) -> None:
    result = CliRunner().invoke(cli, ["k8s", "chart"])
    assert result.exit_code == 0, result.output
    chart = Path(result.output.strip())
    assert (chart / "Chart.yaml").is_file() and (chart / "values.schema.json").is_file() and chart.is_absolute()


def test_a_checkout_path_outside_a_checkout_names_the_bundled_copy(elsewhere: Path) -> None:
    with pytest.raises(click.UsageError) as caught:
        k8s_cmd.load_values(f"launch/k8s/values/{WORKED}.yaml")
    message = caught.value.message
    assert f"--values {WORKED}" in message
    assert all(Path(p).is_file() for p in re.findall(r"\((/[^)]+)\)", message)), message


def test_an_unknown_name_suggests_and_lists_the_bundled_ones(elsewhere: Path) -> None:
    with pytest.raises(click.UsageError, match=rf"did you mean {WORKED}\?\).*bundled: .*resnet50-1node"):
        k8s_cmd.load_values("resnet200-preact-4nod")


@pytest.mark.parametrize("sets", [("zzzz=3",), ("cpu=[4]",)])
def test_hints_name_files_that_exist_here(elsewhere: Path, sets: tuple[str, ...]) -> None:
    """The unknown-value and schema hints point at the chart of this install (values.yaml, schema)."""
    pytest.importorskip("jsonschema")
    with pytest.raises(click.UsageError) as caught:
        k8s_cmd.load_values(WORKED, sets)
    (named,) = re.findall(r"(/\S+\.(?:yaml|json))", caught.value.message)
    assert Path(named).is_file() and "launch/helm/dtrain/values" not in caught.value.message.replace(named, "")
