"""The tracker protocol every backend implements, and the tracker that does nothing.

The engine talks to one `Tracker` on every rank; ranks other than 0 (and `tracking.backend=none`)
get a `NullTracker`, so the training loop never branches on rank or backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
# DatasetRecord.context of the two splits a run reads; the val/ metrics are measured on VALIDATION.
TRAINING, VALIDATION = "training", "validation"


@dataclass(frozen=True)
class DatasetRecord:
    """One dataset split a run read, as MLflow's run page lists it under "Datasets"."""

    name: str  # what `dtrain prepare` recorded (summary.json "dataset"), or "synthetic"
    context: str  # TRAINING | VALIDATION: MLflow's mlflow.data.context input tag
    digest: str  # of the prepared manifest: changes whenever the data does
    source: str  # where it was read (data.root)
    profile: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"samples": 1281167, "classes": 1000}


@runtime_checkable
class Tracker(Protocol):
    """Run tracking as the engine sees it. No method raises because a tracking server is down."""

    @property
    def run_id(self) -> str | None:
        """The id to store in checkpoints so that a resumed run continues the same tracked run."""
        ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffered: sent in batches on flush(), never one request per value."""
        ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_datasets(self, datasets: Sequence[DatasetRecord]) -> None:
        """The data the run read, as run inputs (MLflow) or a record (JSONL)."""
        ...

    def log_model(self, model: Any, example_input: Any, name: str, register_as: str | None = None,
                  evaluated_at: int | None = None) -> None:
        """The trained network as a loadable model with an input/output signature (MLflow only).
        `evaluated_at`: the step of the evaluation that measured these weights; its val/ metrics
        become the model's, on the validation dataset. `register_as` also registers it in the
        model registry (a new version)."""
        ...

    @property
    def run_link(self) -> str | None:
        """How to open this run in a browser: its URL on a server, or the `mlflow ui` command and
        the URL it will serve for a local store; None without MLflow."""
        ...

    @property
    def problem(self) -> str | None:
        """Why the tracking store is not reached, as the end of "MLflow tracking at URI ..." (one
        line, e.g. "is unreachable (...)"); None when it is, or without a store."""
        ...

    def flush(self) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """Accepts everything and keeps nothing: ranks != 0 and `tracking.backend=none`."""

    run_id: str | None = None
    run_link: str | None = None
    problem: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_datasets(self, datasets: Sequence[DatasetRecord]) -> None:
        pass

    def log_model(self, model: Any, example_input: Any, name: str, register_as: str | None = None,
                  evaluated_at: int | None = None) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass


def check_status(status: str) -> str:
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"tracker status must be one of {', '.join(TERMINAL_STATUSES)}, got {status!r}")
    return status
