"""`dtrain reproduce ROW`: rerun a table row of the papers and compare with the paper's numbers."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("reproduce")
@click.argument("row", required=False)
@click.option("--list", "list_rows", is_flag=True, help="List the table rows that can be reproduced.")
@click.option("--data-root", default=None, help="Prepared dataset (default: the recipe's data.root).")
@click.option("--budget-iters", type=click.IntRange(min=4), default=None,
              help="Shorten the run to this many iterations (the report marks it SHORTENED).")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Where the run goes (default: runs/reproduce/ROW).")
@click.option("--report-only", is_flag=True, help="Do not train: write the report of the finished run in --run-dir.")
@click.option("--overwrite", is_flag=True, help="Delete an earlier run in the run dir instead of resuming it.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Extra recipe override (repeatable), e.g. --set optim.batch_size=64.")
def reproduce(row: str | None, list_rows: bool, data_root: str | None, budget_iters: int | None,
              run_dir: Path | None, report_only: bool, overwrite: bool, overrides: tuple[str, ...]) -> None:
    """Train the recipe of a paper's table ROW (e.g. r1-table6-resnet110) and write RUN_DIR/report.md:
    measured error, params and multiply-adds next to the paper's numbers. The report is also logged
    to the run in MLflow."""
    from dtrain.analysis.paper_numbers import ROWS, get_row

    if list_rows:
        click.echo(f"{'row':38} {'recipe':28} {'paper top-1 %':>13}  dataset")
        for key, r in ROWS.items():
            click.echo(f"{key:38} {r.recipe:28} {r.top1_err:>13.2f}  {r.dataset}")
        return
    if not row:
        raise click.UsageError("name a table row (e.g. r1-table6-resnet110); `dtrain reproduce --list` shows them")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise click.UsageError(f"--set {bad[0]!r} must look like key=value")
    if report_only and run_dir is None:
        raise click.UsageError("--report-only needs --run-dir (the finished run to report on)")
    from dtrain.analysis.reproduction import ReproduceOptions, reproduce as run

    opts = ReproduceOptions(data_root=data_root, budget_iters=budget_iters, run_dir=run_dir, overrides=overrides,
                            train=not report_only, overwrite=overwrite)
    path, report = run(get_row(row), opts, echo=click.echo)
    click.echo(report)
    click.echo(f"wrote {path}")
