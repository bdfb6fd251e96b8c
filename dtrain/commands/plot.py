"""`dtrain plot RUN...`: training (thin) and test (bold) error vs iterations, R1 Fig. 4/6 style."""

from __future__ import annotations

from pathlib import Path

import click

from dtrain.analysis.curves import load_curves, resolve_run


@click.command("plot")
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("error_curves"), show_default=True,
              help="Output path without suffix: writes OUT.png and OUT.svg.")
@click.option("--tracking-uri", default=None,
              help="MLflow store of runs given by id (default: RUN_DIR/mlflow.db, or MLFLOW_TRACKING_URI).")
@click.option("--label", "labels", multiple=True, help="Legend label per run, in order (default: model name).")
@click.option("--title", default="", help="Figure title.")
@click.option("--ymax", type=float, default=None, help="Upper limit of the error axis, in percent.")
def plot(runs: tuple[str, ...], out: Path, tracking_uri: str | None, labels: tuple[str, ...], title: str,
         ymax: float | None) -> None:
    """Plot the error curves of one or more runs (run directories or MLflow run ids).

    Thin lines are training error, bold lines test (validation) error, one colour per run.
    """
    from dtrain.analysis.figures import error_curves_figure, save_figure  # matplotlib: an optional extra

    if labels and len(labels) != len(runs):
        raise click.UsageError(f"--label given {len(labels)} times for {len(runs)} runs; give one per run or none")
    curves = [load_curves(resolve_run(run, tracking_uri), labels[i] if labels else None)
              for i, run in enumerate(runs)]
    fig = error_curves_figure(curves, title=title, ylim=(0.0, ymax) if ymax else None)
    for path in save_figure(fig, out):
        click.echo(f"wrote {path}")
    for c in curves:
        train, test = c.final_train_error(), c.final_test_error()
        click.echo(f"{c.label}: {c.last_step()} iterations, final training error "
                   f"{_pct(train)}, final test error {_pct(test)}")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"
