"""Where a run's MLflow store is and the one way dtrain opens a client to it.

RUN_DIR/mlflow.db (SQLite) unless tracking.uri or $MLFLOW_TRACKING_URI names another store (a
server for multi-node runs). The tracker, `dtrain mlflow-sync` and a resumed run's catch-up all
open their client here, so a new SQLite store always starts from the migrated template.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dtrain.tracking.sqlite_template import prepare_sqlite_store

DB_NAME = "mlflow.db"


def resolve_uri(configured: str | None, run_dir: Path) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI (a server for multi-node runs), else RUN_DIR/mlflow.db."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or sqlite_uri(run_dir)


def sqlite_uri(run_dir: Path) -> str:
    """The URI of a run directory's own store, RUN_DIR/mlflow.db."""
    return f"sqlite:///{Path(run_dir).resolve() / DB_NAME}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (sqlite:////abs/path.db or sqlite:///relative.db)."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):].split("?")[0]) if uri.startswith(prefix) else None


def artifact_location(uri: str) -> str | None:
    """Beside the database for SQLite (so artifacts do not land in ./mlruns of the working
    directory); the server's default (proxied mlflow-artifacts:/) otherwise."""
    path = sqlite_path(uri)
    return (path.resolve().parent / "mlartifacts").as_uri() if path is not None else None


def make_client(uri: str) -> Any:
    """An MlflowClient for `uri`; a new SQLite store is first copied from the migrated template."""
    from mlflow.tracking import MlflowClient  # optional dependency, ~2-3 s to import

    path = sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)  # MLflow creates the file, not its directory
        prepare_sqlite_store(path)
    return MlflowClient(tracking_uri=uri)
