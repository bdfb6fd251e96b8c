"""`dtrain mlflow-sync RUN_DIR`: send MLflow what a run could only keep in its metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from dtrain.tracking.sync import sync_run_dir


def _experiment(run_dir: Path) -> str:
    """tracking.experiment of the run (RUN_DIR/config.yaml), for a run MLflow never saw."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        return config.get("tracking", {}).get("experiment") or "dtrain"
    except (OSError, yaml.YAMLError, AttributeError):
        return "dtrain"


@click.command("mlflow-sync")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--uri", default=None, help="tracking URI [the run's own, from metrics.jsonl]")
def mlflow_sync(run_dir: Path, uri: str | None) -> None:
    """Send the params, metrics and final status MLflow lacks, from RUN_DIR/metrics.jsonl."""
    report = sync_run_dir(run_dir, uri=uri, experiment=_experiment(run_dir))
    click.echo(f"MLflow run {report.run_id} at {report.uri}: {report.metrics_sent} metric points and "
               f"{report.params_sent} params sent, status {report.status or 'unchanged (none recorded)'}")
