"""`dtrain experiment ...`: the papers' experiments, end to end (train, tabulate, plot)."""

from __future__ import annotations

from pathlib import Path

import click

from dtrain.analysis.experiments import DegradationOptions, markdown_table, run_degradation, write_outputs


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
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/degradation"), show_default=True)
@click.option("--overwrite", is_flag=True, help="Delete earlier runs in OUT/runs instead of resuming them.")
@click.option("--no-train", is_flag=True, help="Only tabulate and plot the finished runs already in OUT/runs.")
@click.argument("overrides", nargs=-1)
def degradation(dataset: str, dataset_root: Path | None, budget_iters: int | None, depths: tuple[int, ...],
                out: Path, overwrite: bool, no_train: bool, overrides: tuple[str, ...]) -> None:
    """Train plain-N and ResNet-N (R1 Fig. 6) and compare their training error.

    Writes OUT/degradation.{md,csv,json} (final training and test error per net) and
    OUT/degradation.{png,svg} (plain nets left, ResNets right; thin = training, bold = test).
    Extra key=value OVERRIDES go to every run (e.g. optim.batch_size=32).
    """
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise click.UsageError(f"override {bad[0]!r} must look like key=value, e.g. optim.batch_size=32")
    opts = DegradationOptions(out=out, dataset=dataset, dataset_root=dataset_root, depths=depths,
                              budget_iters=budget_iters, overrides=overrides, overwrite=overwrite,
                              train=not no_train)
    results = run_degradation(opts, echo=click.echo)
    paths = write_outputs(results, opts)
    click.echo(markdown_table(results, opts))
    for path in paths:
        click.echo(f"wrote {path}")
