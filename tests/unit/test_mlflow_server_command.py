"""`dtrain mlflow-server`: the `mlflow server` command it runs, for the options a cluster needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dtrain.cli import main
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


def test_auth_runs_mlflows_basic_auth_app_and_says_what_nodes_export(tmp_path: Path) -> None:
    output = _print_only(tmp_path, "--host", "0.0.0.0", "--auth")
    assert "--app-name basic-auth" in output and "MLFLOW_TRACKING_USERNAME" in output
    assert f"users: {tmp_path / 'basic_auth.db'}" in output  # beside the SQLite store
    assert "no login" not in output


def test_without_auth_a_server_open_to_the_network_says_so(tmp_path: Path) -> None:
    assert "anyone who reaches port 5000 reads and writes every run" in _print_only(tmp_path, "--host", "0.0.0.0")
    assert "no login" not in _print_only(tmp_path)  # 127.0.0.1: this machine only


def test_auth_without_what_it_needs_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    import importlib.util

    from dtrain.commands import mlflow_server as command

    arguments = ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--auth"]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flask_wtf" else object())
    with pytest.raises(SystemExit) as missing:
        main(["mlflow-server", *arguments])
    assert missing.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["Error: --auth needs Flask-WTF (MLflow's basic-auth app), which is "
                                                    "not installed: pip install 'dtrain[auth]'"]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.delenv(command.ADMIN_PASSWORD_ENV, raising=False)
    no_admin = CliRunner().invoke(mlflow_server, arguments)
    assert no_admin.exit_code == 2 and command.ADMIN_PASSWORD_ENV in no_admin.output
    assert not (tmp_path / "basic_auth.db").exists()


def test_the_auth_app_gets_its_users_file_and_a_steady_csrf_key(tmp_path: Path, monkeypatch) -> None:
    from dtrain.commands.mlflow_server import SECRET_KEY_ENV, auth_environment

    monkeypatch.delenv(SECRET_KEY_ENV, raising=False)
    first = auth_environment(tmp_path / "auth" / "basic_auth.db")
    config = Path(first["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
    assert f"database_uri = sqlite:///{(tmp_path / 'auth' / 'basic_auth.db').resolve()}" in config
    assert first[SECRET_KEY_ENV] == auth_environment(tmp_path / "auth" / "basic_auth.db")[SECRET_KEY_ENV]
    assert (tmp_path / "auth" / "flask_secret_key").stat().st_mode & 0o077 == 0  # the key is the owner's only
