"""`dtrain mlflow-server`: the MLflow tracking server that every node of a multi-node run logs to.

It runs `mlflow server` (same Python environment) with a database store and proxied artifacts,
and prints the MLFLOW_TRACKING_URI the nodes should export.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from pathlib import Path

import click

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def server_command(backend_store_uri: str, artifacts_destination: str, host: str, port: int, workers: int,
                   allowed_hosts: str | None) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", backend_store_uri,
               "--serve-artifacts", "--artifacts-destination", artifacts_destination,
               "--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed_hosts is None and host not in LOOPBACK_HOSTS:
        allowed_hosts = default_allowed_hosts()
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    return command


def default_allowed_hosts() -> str:
    """MLflow's default (localhost and private IPs) plus this machine's names: nodes usually reach
    the server by hostname, which MLflow's DNS-rebinding guard would otherwise reject."""
    names = {socket.gethostname(), socket.getfqdn()} - set(LOOPBACK_HOSTS)
    patterns = ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*", "10.*", "192.168.*"]
    patterns += [f"172.{i}.*" for i in range(16, 32)]
    for name in sorted(n for n in names if n):
        patterns += [name, f"{name}:*"]
    return ",".join(patterns)


def tracking_uri_for_nodes(host: str, port: int) -> str:
    return f"http://{_this_machine() if host in ('0.0.0.0', '::') else host}:{port}"


def _this_machine() -> str:
    fqdn = socket.getfqdn()
    return socket.gethostname() if fqdn.startswith("localhost") else fqdn


def _check_backend_store_uri(uri: str) -> Path | None:
    """Raises a one-line usage error for a non-database URI; returns the SQLite file, if any."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if "://" not in uri or scheme not in DATABASE_SCHEMES:
        raise click.UsageError(
            f"--backend-store-uri {uri!r} is not a database URI; use sqlite:////abs/path/mlflow.db "
            "or postgresql://user:password@host:5432/mlflow"
        )
    return Path(uri[len("sqlite:///"):]).expanduser() if scheme == "sqlite" else None


@click.command("mlflow-server")
@click.option("--backend-store-uri", default=lambda: f"sqlite:///{Path.cwd() / 'mlflow-server' / 'mlflow.db'}",
              show_default="sqlite:///./mlflow-server/mlflow.db",
              help="Database for runs and metrics: sqlite:////abs/path.db or postgresql://... "
                   "(use PostgreSQL when many runs log at once).")
@click.option("--artifacts-destination", default=lambda: str(Path.cwd() / "mlflow-server" / "artifacts"),
              show_default="./mlflow-server/artifacts",
              help="Where the server stores artifacts the nodes upload (a directory, s3://..., gs://...).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; 0.0.0.0 to accept the other nodes.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--allowed-hosts", default=None,
              help="Comma-separated Host headers MLflow accepts, NAME or NAME:PORT (wildcards: NAME:*): "
                   "include every name the nodes use in MLFLOW_TRACKING_URI (an alias, a Service name), "
                   "others get 403 'Invalid Host header'. Default when binding beyond localhost: this "
                   "machine's names and private IPs.")
@click.option("--print-only", is_flag=True, help="Print the command and the tracking URI; start nothing.")
def mlflow_server(backend_store_uri: str, artifacts_destination: str, host: str, port: int, workers: int,
                  allowed_hosts: str | None, print_only: bool) -> None:
    """Start the MLflow tracking server the nodes of a multi-node run log to.

    Every node then exports MLFLOW_TRACKING_URI (printed below) before `dtrain train`; rank 0
    logs, and keeps RUN_DIR/metrics.jsonl if the server is unreachable.
    """
    sqlite_file = _check_backend_store_uri(backend_store_uri)
    command = server_command(backend_store_uri, artifacts_destination, host, port, workers, allowed_hosts)
    click.echo(f"export MLFLOW_TRACKING_URI={tracking_uri_for_nodes(host, port)}")
    click.echo(shlex.join(command))
    if print_only:
        return
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    if "://" not in artifacts_destination:
        Path(artifacts_destination).mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    try:
        os.execv(command[0], command)
    except OSError as exc:
        raise click.ClickException(f"could not start mlflow server: {exc}") from None
