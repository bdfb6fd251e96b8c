"""`dtrain reproduce ROW`: train the recipe of a paper's table row, measure the model's params and
multiply-adds, and write a report comparing them with the paper (RUN_DIR/report.md, also logged
to the run in MLflow as reproduction/report.md)."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from dtrain.analysis.paper_numbers import PaperRow
from dtrain.analysis.reports import Measured, render_report
from dtrain.analysis.training_runs import run_training, shortened_schedule
from dtrain.config import RunConfig, check_data_root, load_config
from dtrain.errors import DtrainError
from dtrain.builders import build_model

REPORT_NAME = "report.md"
ARTIFACT_PATH = "reproduction/report.md"


@dataclass
class ReproduceOptions:
    data_root: str | None = None
    budget_iters: int | None = None
    run_dir: Path | None = None
    overrides: tuple[str, ...] = ()
    train: bool = True  # False: report on an existing run in run_dir
    overwrite: bool = False


def run_overrides(row: PaperRow, opts: ReproduceOptions) -> list[str]:
    overrides = list(row.overrides)
    if opts.data_root:
        overrides.append(f"data.root={opts.data_root}")
    if opts.budget_iters:
        overrides += shortened_schedule(opts.budget_iters)
    return overrides + list(opts.overrides)


def default_run_dir(row: PaperRow) -> Path:
    return Path("runs") / "reproduce" / row.key


def full_iterations(config: RunConfig) -> int | None:
    """Iterations of the unshortened recipe: max_iters, or epochs x batches per epoch."""
    if config.schedule.max_iters:
        return config.schedule.max_iters
    summary = _summary(config.data.root)
    train = summary.get("splits", {}).get(config.data.train_split, {}).get("accepted")
    if config.schedule.epochs and train:
        return config.schedule.epochs * (train // config.optim.batch_size)
    return None


def _summary(root: str) -> dict:
    path = Path(root) / "summary.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def measure(row: PaperRow, config: RunConfig, full_config: RunConfig, run_dir: Path, opts: ReproduceOptions,
            overrides: list[str], seconds: float | None) -> Measured:
    from dtrain import models

    final_path = run_dir / "final_metrics.json"
    if not final_path.is_file():
        raise DtrainError(f"{run_dir} holds no final_metrics.json: the run did not finish; train it first")
    final = json.loads(final_path.read_text())
    params, madds = models.complexity(build_model(config.model), config.data.val_crop)
    return Measured(top1_err=final.get("top1_err"), top5_err=final.get("top5_err"), params=params,
                    multiply_adds=madds, input_size=config.data.val_crop, iterations=int(final.get("step", 0)),
                    full_iterations=full_iterations(full_config), dataset=_summary(config.data.root).get("dataset", ""),
                    data_root=config.data.root, eval_mode=config.eval.mode, recipe=row.recipe, overrides=overrides,
                    run_id=final.get("run_id"), run_dir=str(run_dir),
                    seconds=seconds if seconds is not None else final.get("seconds"), budget_iters=opts.budget_iters)


def log_report(config: RunConfig, run_dir: Path, run_id: str | None, report: str, row: PaperRow) -> bool:
    """Attach the report to the run in MLflow; a tracking failure only warns (the file is written)."""
    if not run_id or config.tracking.backend != "mlflow":
        return False
    try:
        from mlflow.tracking import MlflowClient

        from dtrain.tracking import resolve_uri

        client = MlflowClient(tracking_uri=resolve_uri(config.tracking.uri, run_dir))
        client.log_text(run_id, report, ARTIFACT_PATH)
        client.set_tag(run_id, "dtrain.reproduce", row.key)
        return True
    except Exception as exc:  # the report on disk is the result; MLflow is a copy
        warnings.warn(f"could not log the report to MLflow run {run_id}: {str(exc).splitlines()[0]}", stacklevel=2)
        return False


def reproduce(row: PaperRow, opts: ReproduceOptions, echo=print) -> tuple[Path, str]:
    run_dir = opts.run_dir or default_run_dir(row)
    overrides = run_overrides(row, opts)
    config = load_config(row.recipe, [*overrides, f"run_dir={run_dir}"])
    full_config = load_config(row.recipe, [*row.overrides, *([f"data.root={opts.data_root}"] if opts.data_root else [])])
    seconds = None
    if opts.train:
        check_data_root(config)  # fail before starting a subprocess
        echo(f"training {row.recipe} for {row.key} -> {run_dir}")
        seconds = run_training(row.recipe, run_dir, overrides, overwrite=opts.overwrite, echo=echo,
                               keep_tracking_env=True).seconds
    measured = measure(row, config, full_config, run_dir, opts, overrides, seconds)
    report = render_report(row, measured)
    path = run_dir / REPORT_NAME
    path.write_text(report)
    if log_report(config, run_dir, measured.run_id, report, row):
        echo(f"logged {ARTIFACT_PATH} to MLflow run {measured.run_id}")
    return path, report
