"""`dtrain mlflow-server`: the MLflow tracking server that every node of a multi-node run logs to.

It runs `mlflow server` (same Python environment) with a database store and proxied artifacts,
and prints the MLFLOW_TRACKING_URI the nodes should export.

Without --auth anyone who reaches the port reads and writes every run. --auth runs MLflow's own
basic-auth app (`--app-name basic-auth`): every request needs a user and password (the nodes
export MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD). Its users live in their own SQLite
file (--auth-db); the first start creates the admin user from MLFLOW_AUTH_ADMIN_PASSWORD.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shlex
import socket
import sys
from pathlib import Path

import click

from dtrain.errors import DtrainError
from dtrain.extras import missing_module_message

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
AUTH_APP = "basic-auth"  # MLflow's own login app (mlflow server --app-name)
AUTH_CONFIG_NAME = "basic_auth.ini"
SECRET_KEY_NAME = "flask_secret_key"  # CSRF key of the auth app, the same across restarts
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"


def server_command(backend_store_uri: str, artifacts_destination: str, host: str, port: int, workers: int,
                   allowed_hosts: str | None, auth: bool = False) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", backend_store_uri,
               "--serve-artifacts", "--artifacts-destination", artifacts_destination,
               "--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed_hosts is None and host not in LOOPBACK_HOSTS:
        allowed_hosts = default_allowed_hosts()
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    if auth:
        command += ["--app-name", AUTH_APP]
    return command


def default_auth_db(sqlite_file: Path | None) -> Path:
    """Beside a SQLite backend store, else ./mlflow-server/basic_auth.db."""
    return (sqlite_file.parent if sqlite_file is not None else Path.cwd() / "mlflow-server") / "basic_auth.db"


def check_auth(auth_db: Path) -> None:
    """One-line errors for what MLflow's auth app would refuse to start without."""
    if importlib.util.find_spec("flask_wtf") is None:
        raise DtrainError(f"--auth {missing_module_message('flask_wtf')}")
    if not auth_db.exists() and not os.environ.get(ADMIN_PASSWORD_ENV):
        raise click.UsageError(f"--auth: the first start creates the admin user; set {ADMIN_PASSWORD_ENV} to its "
                               f"password (and MLFLOW_AUTH_ADMIN_USERNAME, default admin). Users live in {auth_db}")


def auth_environment(auth_db: Path) -> dict[str, str]:
    """The auth app's config file (written beside auth_db) and CSRF key, as the server's environment."""
    auth_db.parent.mkdir(parents=True, exist_ok=True)
    config = auth_db.parent / AUTH_CONFIG_NAME
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{auth_db.resolve()}\nadmin_username = admin\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config)}
    if not os.environ.get(SECRET_KEY_ENV):
        key_file = auth_db.parent / SECRET_KEY_NAME
        if not key_file.exists():
            key_file.touch(mode=0o600)
            key_file.write_text(secrets.token_hex(32))
        env[SECRET_KEY_ENV] = key_file.read_text().strip()
    return env


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
@click.option("--auth", is_flag=True,
              help="Require a login for every request (MLflow's basic-auth app, needs Flask-WTF: "
                   "pip install 'dtrain[auth]'); the first start needs MLFLOW_AUTH_ADMIN_PASSWORD.")
@click.option("--auth-db", type=click.Path(path_type=Path), default=None,
              help="SQLite file of the users and permissions (default: basic_auth.db beside a SQLite "
                   "backend store, else ./mlflow-server/basic_auth.db).")
@click.option("--print-only", is_flag=True, help="Print the command and the tracking URI; start nothing.")
def mlflow_server(backend_store_uri: str, artifacts_destination: str, host: str, port: int, workers: int,
                  allowed_hosts: str | None, auth: bool, auth_db: Path | None, print_only: bool) -> None:
    """Start the MLflow tracking server the nodes of a multi-node run log to.

    Every node then exports MLFLOW_TRACKING_URI (printed below) before `dtrain train`; rank 0
    logs, and keeps RUN_DIR/metrics.jsonl if the server is unreachable. Without --auth, anyone
    who reaches the port reads and writes every run.
    """
    sqlite_file = _check_backend_store_uri(backend_store_uri)
    auth_db = (auth_db or default_auth_db(sqlite_file)).expanduser()
    command = server_command(backend_store_uri, artifacts_destination, host, port, workers, allowed_hosts, auth)
    click.echo(f"export MLFLOW_TRACKING_URI={tracking_uri_for_nodes(host, port)}")
    if auth:
        click.echo("export MLFLOW_TRACKING_USERNAME=... MLFLOW_TRACKING_PASSWORD=...   # a user of the server "
                   f"(users: {auth_db})")
    elif host not in LOOPBACK_HOSTS:
        click.echo(f"note: no login: anyone who reaches port {port} reads and writes every run (--auth asks for one)")
    click.echo(shlex.join(command))
    if print_only:
        return
    if auth:
        check_auth(auth_db)
        os.environ.update(auth_environment(auth_db))
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    if "://" not in artifacts_destination:
        Path(artifacts_destination).mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    try:
        os.execv(command[0], command)
    except OSError as exc:
        raise click.ClickException(f"could not start mlflow server: {exc}") from None
