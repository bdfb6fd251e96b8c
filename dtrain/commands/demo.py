"""`dtrain demo`: the embedded default end to end, on one CPU, in minutes.

scikit-learn's 1,797 real handwritten digits -> `dtrain prepare digits` -> a CIFAR-style
ResNet-20 trained with R1's CIFAR recipe shortened (configs/digits_resnet20.yaml) -> MLflow.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from dtrain.errors import DtrainError
from dtrain.resolve import load_config
from dtrain.training import mlflow_ui_command, train_config
from dtrain_prep.cli import prepare

RECIPE = "digits_resnet20"


def prepare_digits(data_dir: Path) -> None:
    """Write the digits in the prepared layout (skipped when a complete copy is already there)."""
    if (data_dir / "manifest.parquet").is_file():
        click.echo(f"[demo] using the prepared digits in {data_dir}")
        return
    click.echo(f"[demo] preparing the digits into {data_dir}")
    # wds shards (always written) + manifest are what the torch loader reads; no FFCV/DALI needed.
    prepare.main(["digits", "--out", str(data_dir), "--formats", "wds"], standalone_mode=False)


def demo_overrides(out: Path, epochs: int | None) -> list[str]:
    overrides = [f"data.root={out / 'data'}", f"run_dir={out}"]
    if epochs is not None:
        base = load_config(RECIPE).schedule
        if base.epochs is None:
            raise DtrainError(f"--epochs: the {RECIPE} recipe has no schedule.epochs to scale its lr drops by")
        # Keep the recipe's lr drops at the same fractions of the run.
        milestones = sorted({max(1, round(m * epochs / base.epochs)) for m in base.milestones})
        overrides += [f"schedule.epochs={epochs}", f"schedule.milestones={milestones}"]
    return overrides


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Run directory: data/, checkpoints/, mlflow.db, config.yaml, final_metrics.json.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Train this many epochs (default: the recipe's); lr drops scale along.")
@click.argument("overrides", nargs=-1)
def demo(out: Path, epochs: int | None, overrides: tuple[str, ...]) -> None:
    """Prepare the bundled digits, train a ResNet-20 on them, log to MLflow, print the result."""
    started = time.perf_counter()
    out = out.resolve()
    prepare_digits(out / "data")
    cfg = load_config(RECIPE, [*demo_overrides(out, epochs), *overrides])
    click.echo(f"[demo] training {cfg.model.name} on the digits for {cfg.schedule.epochs} epochs "
               f"(batch {cfg.optim.batch_size}, lr {cfg.optim.lr}, drops at epochs {cfg.schedule.milestones})")
    outcome = train_config(cfg)
    result = outcome.result
    if outcome.exit_code or result is None or result.final is None:
        sys.exit(outcome.exit_code or 1)
    final = result.final
    click.echo("")
    click.echo(f"[demo] digits validation: top-1 accuracy {100 - final.top1_err:.2f}% "
               f"(top-1 error {final.top1_err:.2f}%, top-5 error {final.top5_err:.2f}%, {final.samples} images)")
    click.echo(f"[demo] total time {time.perf_counter() - started:.0f} s; run dir {out}")
    click.echo(f"[demo] checkpoints: {cfg.resolved_checkpoint_dir()} (last: {result.last_checkpoint})")
    click.echo(f"[demo] MLflow UI: {mlflow_ui_command(cfg)}  then open http://127.0.0.1:5000")
