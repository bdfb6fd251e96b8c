"""Fast creation of a run's SQLite MLflow store.

MLflow builds a new SQLite store by running its whole chain of alembic migrations, which takes
~7 s on a loaded 2-core machine: paid by every new run directory (and every test). We build the
migrated, still empty schema once per MLflow version in a cache and copy it (milliseconds).
MLflow has no public API for this, so it uses mlflow.store.db.utils' private helpers (mlflow is
pinned); on any failure MLflow simply builds the store itself as usual.
"""

from __future__ import annotations

import logging
import os
import shutil
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    if os.environ.get("DTRAIN_CACHE_DIR"):
        return Path(os.environ["DTRAIN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dtrain"


def prepare_sqlite_store(db_path: Path) -> bool:
    """Puts an empty, fully migrated MLflow schema at db_path unless a file is already there."""
    if db_path.exists():
        return False
    try:
        template = _schema_template()
        db_path.parent.mkdir(parents=True, exist_ok=True)
        partial = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, partial)
        os.replace(partial, db_path)
        return True
    except Exception as exc:  # the slow path still works: MLflow migrates a new file itself
        log.debug("no SQLite schema template (%s); MLflow builds the store", exc)
        return False


def _schema_template() -> Path:
    template = cache_dir() / f"mlflow-{metadata.version('mlflow')}-schema.db"
    if template.exists():
        return template
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_name(f".{template.name}.{os.getpid()}.tmp")
    partial.unlink(missing_ok=True)
    engine = create_sqlalchemy_engine(f"sqlite:///{partial}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    os.replace(partial, template)  # atomic: concurrent runs never copy a half-built schema
    return template
