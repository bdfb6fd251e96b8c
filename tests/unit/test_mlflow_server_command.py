"""`dtrain mlflow-server`: the `mlflow server` command it runs, for the options a cluster needs."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from dtrain.commands.mlflow_server import mlflow_server


def _print_only(tmp_path: Path, *options: str) -> str:
    result = CliRunner().invoke(mlflow_server, ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                                                "--artifacts-destination", str(tmp_path / "art"), *options,
                                                "--print-only"])
    assert result.exit_code == 0, result.output
    return result.output


def test_allowed_hosts_reach_mlflow_server_as_given(tmp_path: Path) -> None:
    output = _print_only(tmp_path, "--host", "0.0.0.0", "--port", "5077", "--allowed-hosts", "mlflow,mlflow:5077")
    assert "--host 0.0.0.0 --port 5077" in output and "--allowed-hosts mlflow,mlflow:5077" in output
    assert "export MLFLOW_TRACKING_URI=http://" in output and ":5077" in output
