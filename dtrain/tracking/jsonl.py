"""RUN_DIR/metrics.jsonl: an append-only, line-flushed record of everything a run tracks.

It is the `tracking.backend=jsonl` tracker and, under MLflow, the local copy that survives a
tracking server being down (every metric is written here before it is sent anywhere).
One JSON object per line, each with a "type":
    {"type": "run", "run_id": ..., "backend": ..., "uri": ...}        a (re)start of the run
    {"type": "params", "params": {...}}   {"type": "tags", "tags": {...}}
    {"type": "metrics", "step": 1200, "metrics": {"train/loss": 2.31, ...}}
    {"type": "artifact", "path": ..., "artifact_path": ...}   {"type": "status", "status": "FINISHED"}
    {"type": "datasets", "datasets": [{"name": ..., "context": "training", "digest": ..., ...}]}
and a "time" (Unix seconds). NaN/inf losses are written as JSON's NaN/Infinity, which Python reads.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dtrain.tracking.base import DatasetRecord, check_status

JSONL_NAME = "metrics.jsonl"
LOCAL_ARTIFACT_DIR = "artifacts"


class JsonlTracker:
    def __init__(self, run_dir: str | Path, *, run_id: str | None = None, run_name: str = "",
                 backend: str = "jsonl", uri: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / JSONL_NAME
        self.run_id: str | None = run_id
        self.run_link: str | None = None
        self.problem: str | None = None
        # Line-buffered append: a crash loses at most the line being written.
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - open until close()
        self.write_record("run", run_id=self.run_id, run_name=run_name, backend=backend, uri=uri)

    def write_record(self, kind: str, **fields: Any) -> None:
        if self._file.closed:
            return
        self._file.write(json.dumps({"type": kind, "time": round(time.time(), 3), **fields}, default=str) + "\n")

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.write_record("params", params={k: _jsonable(v) for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.write_record("metrics", step=int(step), metrics={k: float(v) for k, v in metrics.items()})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.write_record("tags", tags={k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Records the artifact and keeps a copy under RUN_DIR/artifacts unless it already lives in RUN_DIR."""
        source = Path(path)
        if not _is_inside(source, self.run_dir):
            target_dir = self.run_dir / LOCAL_ARTIFACT_DIR / (artifact_path or "")
            target_dir.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target_dir / source.name, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, target_dir / source.name)
        self.write_record("artifact", path=str(source.resolve()), artifact_path=artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Writes RUN_DIR/artifacts/ARTIFACT_FILE (the Tracker method)."""
        self.write_text(text, artifact_file)

    def write_text(self, text: str, artifact_file: str) -> tuple[Path, str | None]:
        """log_text that also returns the file and its artifact directory (what MLflow is sent)."""
        target = self.run_dir / LOCAL_ARTIFACT_DIR / artifact_file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        parent = str(Path(artifact_file).parent)
        artifact_path = None if parent == "." else parent
        self.write_record("artifact", path=str(target), artifact_path=artifact_path)
        return target, artifact_path

    def log_datasets(self, datasets: Sequence[DatasetRecord]) -> None:
        self.write_record("datasets", datasets=[asdict(d) for d in datasets])

    def log_model(self, model: Any, example_input: Any, name: str, register_as: str | None = None,
                  evaluated_at: int | None = None) -> None:
        """Nothing: without MLflow the checkpoint (RUN_DIR/checkpoints) is the model."""

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def close(self, status: str = "FINISHED") -> None:
        if self._file.closed:
            return
        self.write_record("status", status=check_status(status))
        self._file.close()


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn last line (the process died mid-write) is skipped."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def metric_history(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} in the order logged, e.g. to plot a run without MLflow."""
    history: dict[str, list[tuple[int, float]]] = {}
    for record in read_records(path):
        if record.get("type") == "metrics":
            for key, value in record["metrics"].items():
                history.setdefault(key, []).append((record["step"], value))
    return history


def last_per_step(points: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """`points` of one metric in step order, one per step: a resumed run logs the steps after its
    last checkpoint again, and the later value (the run that went on) wins, as in MLflow's plots."""
    return sorted(dict(points).items())


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)


def _is_inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return False
