"""Run tracking: MLflow (default), a JSONL file, or nothing — one `Tracker` protocol.

    tracker = build_tracker(cfg.tracking, run_dir=run_dir, rank=rank, run_name=name,
                            resume_run_id=checkpoint.get("mlflow_run_id"))
    record_run_start(tracker, cfg, world_size=world)   # params, datasets, system tags, resolved config
    tracker.log_metrics({"train/loss": 2.3}, step=50)  # via MetricAggregator(cfg.tracking.metrics_every_iters)
    record_models(tracker, cfg, model, last_checkpoint=path, best_checkpoint=best)  # MLflow models, paths as tags
    record_run_end(tracker, {"val/top1_err": 0.236}, status="FINISHED")   # final metrics, close
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

from dtrain.config import TrackingConfig
from dtrain.errors import ConfigError
from dtrain.provenance import local_devices, system_tags
from dtrain.tracking.aggregate import MetricAggregator
from dtrain.tracking.background import BackgroundTracker
from dtrain.tracking.base import NullTracker, Tracker
from dtrain.tracking.console import header_line, keep_output_without_reader, prefix_rank_output
from dtrain.tracking.jsonl import JsonlTracker, metric_history, read_records
from dtrain.tracking.mlflow_tracker import MlflowTracker  # mlflow itself is imported only when used
from dtrain.tracking.run_record import (
    applicable_params,
    default_run_name,
    record_models,
    record_run_end,
    record_run_start,
)
from dtrain.tracking.store import resolve_uri
from dtrain.tracking.sync import catch_up as send_missing

__all__ = ["Tracker", "NullTracker", "JsonlTracker", "MetricAggregator", "build_tracker", "resolve_uri",
           "system_tags", "local_devices", "read_records", "metric_history", "record_run_start", "record_run_end",
           "record_models", "applicable_params", "header_line", "prefix_rank_output", "keep_output_without_reader",
           "default_run_name", "BACKENDS"]

def _mlflow(cfg: TrackingConfig, run_dir: Path, run_name: str, resume_run_id: str | None) -> Tracker:
    uri = resolve_uri(cfg.uri, run_dir)
    sampling = cfg.system_metrics_interval if cfg.system_metrics and cfg.system_metrics_interval > 0 else None

    def tracker() -> Tracker:
        return MlflowTracker(uri=uri, experiment=cfg.experiment, run_dir=run_dir, run_name=run_name,
                             resume_run_id=resume_run_id, flush_every_seconds=cfg.flush_every_seconds,
                             system_metrics_interval=sampling)

    if not uri.startswith(("http://", "https://")):
        return tracker()  # a local store answers or fails at once
    # A server can accept and never answer: in a thread of its own it never stalls a step.
    # What only metrics.jsonl holds (earlier attempts of a resumed run, a full queue) is sent from it.
    return BackgroundTracker(tracker, run_dir, resume_run_id=resume_run_id,
                             catch_up=partial(send_missing, run_dir, uri))


def _jsonl(cfg: TrackingConfig, run_dir: Path, run_name: str, resume_run_id: str | None) -> Tracker:
    return JsonlTracker(run_dir, run_id=resume_run_id or uuid.uuid4().hex, run_name=run_name)


def _none(cfg: TrackingConfig, run_dir: Path, run_name: str, resume_run_id: str | None) -> Tracker:
    return NullTracker()


BACKENDS: dict[str, Callable[..., Tracker]] = {"mlflow": _mlflow, "jsonl": _jsonl, "none": _none}


def build_tracker(cfg: TrackingConfig, *, run_dir: Path, rank: int, run_name: str,
                  resume_run_id: str | None = None) -> Tracker:
    """The tracker for this process: rank 0 gets cfg.backend's, every other rank a NullTracker."""
    if rank != 0:
        return NullTracker()
    try:
        factory = BACKENDS[cfg.backend]
    except KeyError:
        raise ConfigError(f"tracking.backend={cfg.backend!r} is not one of {', '.join(BACKENDS)}") from None
    return factory(cfg, Path(run_dir), cfg.run_name or run_name, resume_run_id)
