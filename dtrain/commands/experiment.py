"""`dtrain experiment ...`: the papers' experiments, end to end (train, tabulate, plot)."""

from __future__ import annotations

from pathlib import Path

import click

from dtrain.analysis.degradation_report import markdown_table, plot_record, write_outputs
from dtrain.analysis.experiments import TRAIN_WINDOWS, DegradationOptions, run_degradation


@click.group("experiment")
def experiment() -> None:
    """Run the papers' experiments on a prepared dataset."""


def _depths(ctx, param, value: str) -> tuple[int, ...]:
    try:
        depths = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma list of depths, e.g. 20,32,44,56") from None
    bad = [d for d in depths if d < 8 or (d - 2) % 6]
    if bad or not depths:
        raise click.BadParameter(f"CIFAR depths are 6n+2 (20, 32, 44, 56, 110); got {value!r}")
    return depths


def _seeds(ctx, param, value: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma list of seeds, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"give distinct seeds >= 0 as a comma list, e.g. 0,1,2; got {value!r}")
    return seeds


@experiment.command("degradation")
@click.option("--dataset", type=click.Choice(["digits", "cifar10"]), default="digits", show_default=True,
              help="digits: the bundled scans with the digits recipe; cifar10: R1's CIFAR-10 recipes.")
@click.option("--dataset-root", type=click.Path(path_type=Path), default=None,
              help="Prepared dataset (digits default: runs/data/digits, prepared if missing).")
@click.option("--budget-iters", type=click.IntRange(min=4), default=None,
              help="Shorten every run to this many iterations (the recipe's lr drops at the same fractions of the "
                   "run, e.g. 32k/48k of 64k -> 50% and 75%).")
@click.option("--depths", default="20,32,44,56", show_default=True, callback=_depths,
              help="Depths to train, each as plain and ResNet.")
@click.option("--seeds", default="0", show_default=True, callback=_seeds,
              help="Train every net once per seed (train.seed), into OUT/runs/NET-seedS; the tables give the mean, "
                   "min-max and standard deviation over seeds.")
@click.option("--train-windows", type=click.IntRange(min=1), default=TRAIN_WINDOWS, show_default=True,
              help="Final training error = mean of the last this many logged training-error windows "
                   "(tracking.metrics_every_iters iterations each); the table says how many images that is.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/degradation"), show_default=True)
@click.option("--record", type=click.Path(path_type=Path), default=None,
              help="Also write the tables, the SVG and every run's metrics.jsonl (curves/) into this folder, "
                   "e.g. benchmarks/results/NAME: a record that re-plots without the run directories.")
@click.option("--overwrite", is_flag=True,
              help="Delete existing runs in OUT/runs and retrain them from scratch (without it they are refused).")
@click.option("--no-train", is_flag=True,
              help="Only tabulate and plot the finished runs in OUT/runs; each must have been made by this command "
                   "with the same settings, and is marked as not trained in this invocation.")
@click.argument("overrides", nargs=-1)
def degradation(dataset: str, dataset_root: Path | None, budget_iters: int | None, depths: tuple[int, ...],
                seeds: tuple[int, ...], train_windows: int, out: Path, record: Path | None, overwrite: bool,
                no_train: bool, overrides: tuple[str, ...]) -> None:
    """Train plain-N and ResNet-N (R1 Fig. 6) and compare their training error over seeds.

    Writes OUT/degradation.{md,csv,json} (per net: mean, min-max and standard deviation over seeds of
    the final training and test error, and every seed's value), OUT/degradation.{png,svg} (plain nets
    left, ResNets right; thin = training, bold = test, band = min-max over seeds) and
    OUT/curves/NET-seedS.metrics.jsonl (each run's curves). Every run is trained from scratch; an
    existing run directory is refused unless --overwrite. Extra key=value OVERRIDES go to every run
    (e.g. optim.batch_size=32).
    """
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise click.UsageError(f"override {bad[0]!r} must look like key=value, e.g. optim.batch_size=32")
    seed_keys = [o for o in overrides if o.split("=", 1)[0] == "train.seed"]
    if seed_keys:
        raise click.UsageError(f"{seed_keys[0]!r}: give seeds with --seeds (e.g. --seeds 0,1,2), not as an override")
    if overwrite and no_train:
        raise click.UsageError("--overwrite retrains runs and --no-train trains nothing: give one of them")
    opts = DegradationOptions(out=out, dataset=dataset, dataset_root=dataset_root, depths=depths, seeds=seeds,
                              budget_iters=budget_iters, overrides=overrides, overwrite=overwrite,
                              train=not no_train, train_windows=train_windows, record=record)
    results = run_degradation(opts, echo=click.echo)
    paths = write_outputs(results, opts)
    click.echo(markdown_table(results, opts))
    for path in paths:
        click.echo(f"wrote {path}")


@experiment.command("degradation-plot")
@click.argument("record", type=click.Path(path_type=Path, exists=True, file_okay=False))
def degradation_plot(record: Path) -> None:
    """Redraw RECORD/degradation.{png,svg} from RECORD/degradation.json and the per-run curves in
    RECORD/curves (as `degradation --record` writes them): no run directories needed."""
    if not (record / "degradation.json").is_file():
        raise click.UsageError(f"{record} holds no degradation.json; give a folder written by "
                               "`dtrain experiment degradation` (its --out or --record)")
    for path in plot_record(record):
        click.echo(f"wrote {path}")
