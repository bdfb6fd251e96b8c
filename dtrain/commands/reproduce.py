"""`dtrain reproduce ROW`: rerun a table row of the papers and compare with the paper's numbers."""

from __future__ import annotations

from pathlib import Path

import click

from dtrain.analysis import reproduction
from dtrain.analysis.later_recipes import is_later_recipe
from dtrain.analysis.paper_numbers import ROWS, get_row
from dtrain.analysis.row_cost import row_cost
from dtrain.commands.overrides import all_overrides, complete_override, set_option


def _err(value, fails=False):
    return "fail" if fails else ("—" if value is None else f"{value:.2f}")


PAPERS_TITLE = "From the papers (R1: He et al., CVPR 2016; R2: He et al., ECCV 2016), errors as printed there:"
LATER_TITLE = ("Later recipes (beyond the papers: torchvision, timm, FFCV), errors = 100 - the accuracy each "
               "project publishes:")


def _row_lines(title: str, rows, widths: tuple[int, int, int, int, int], first_header: str, last_header: str,
               last) -> list[str]:
    """A `--list` table: row key, source (`first_header`), protocol, statistic over runs and recipe in
    columns of `widths`, then each row's cost and published errors, then `last(row)`."""
    headers = ("row", first_header, "protocol", "runs", "recipe")
    cost = f"{'epochs':>6} {'images':>8} {'top-1 %':>7} {'top-5 %':>7}"
    lines = [title, " ".join(f"{h:{w}}" for h, w in zip(headers, widths, strict=True)) + f" {cost}  {last_header}"]
    for r in rows:
        cells = (r.key, r.source, r.protocol.name, r.runs_statistic, r.recipe)
        epochs, images = row_cost(r).describe()
        lines.append(" ".join(f"{c:{w}}" for c, w in zip(cells, widths, strict=True)) +
                     f" {epochs:>6} {images:>8} {_err(r.top1_err, r.fails):>7} {_err(r.top5_err):>7}  {last(r)}")
    return lines


def _paper_lines(rows) -> list[str]:
    return _row_lines(PAPERS_TITLE, rows, (44, 11, 12, 12, 32), "table", "dataset", lambda r: r.dataset)


def _later_lines(rows) -> list[str]:
    return _row_lines(LATER_TITLE, rows, (20, 26, 15, 10, 18), "source", "turns on", lambda r: r.turns_on)


def list_table(rows) -> str:
    """The papers' rows, then the later recipes' (later_recipes): key, source, protocol, recipe, what
    training it costs (epochs, images seen), the reference errors (and the papers' statistic over runs)."""
    rows = list(rows)
    papers = [r for r in rows if not is_later_recipe(r)]
    later = [r for r in rows if is_later_recipe(r)]
    groups = ([_paper_lines(papers)] if papers else []) + ([_later_lines(later)] if later else [])
    return "\n\n".join("\n".join(group) for group in groups)


@click.command("reproduce")
@click.argument("row", required=False)
@click.argument("overrides", nargs=-1, shell_complete=complete_override)
@click.option("--list", "list_rows", is_flag=True,
              help="List the rows that can be reproduced: the papers' tables, then the later recipes (torchvision, "
                   "timm, FFCV), each with its cost (epochs, images seen) and reference errors.")
@click.option("--data-root", default=None, help="Prepared dataset (default: the recipe's data.root).")
@click.option("--budget-iters", type=click.IntRange(min=4), default=None,
              help="Shorten the run to this many iterations, the recipe's warm-up and lr drops at the same "
                   "fractions of the run (the report marks it SHORTENED and says what the lr did).")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Where the run goes (default: runs/reproduce/ROW).")
@click.option("--report-only", is_flag=True, help="Do not train: write the report of the finished run in --run-dir.")
@click.option("--overwrite", is_flag=True, help="Delete an earlier run in the run dir instead of resuming it.")
@set_option
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train this many runs (train.seed=0..N-1, in RUN_DIR/seed-i) and report best/median/mean.")
@click.option("--eval-set", "eval_overrides", multiple=True, metavar="KEY=VALUE",
              help="Override for the protocol test only (repeatable), e.g. --eval-set eval.scales=[32,48] on tiny "
                   "images.")
def reproduce(row: str | None, overrides: tuple[str, ...], list_rows: bool, data_root: str | None,
              budget_iters: int | None, run_dir: Path | None, report_only: bool, overwrite: bool,
              sets: tuple[str, ...], seeds: int, eval_overrides: tuple[str, ...]) -> None:
    """Train the recipe of a paper's table ROW (e.g. r1-table6-resnet110), test its final and best
    checkpoints with the test protocol of the row's table (ten-crop, single-320, multi-scale,
    center; an ensemble for R1 Table 5) and write RUN_DIR/report.md: those errors, params and
    multiply-adds next to the paper's numbers. The report is also logged to the run in MLflow.

    KEY=VALUE OVERRIDES (or --set KEY=VALUE) change the row's recipe, e.g. optim.batch_size=64."""
    if list_rows:
        click.echo(list_table(ROWS.values()))
        return
    if not row or "=" in row:
        raise click.UsageError("name a table row (e.g. r1-table6-resnet110) before any KEY=VALUE; "
                               "`dtrain reproduce --list` shows them")
    overrides = tuple(all_overrides(overrides, sets))
    bad = [o for o in overrides + eval_overrides if "=" not in o]
    if bad:
        raise click.UsageError(f"override {bad[0]!r} must look like key=value, e.g. optim.batch_size=64")
    if report_only and run_dir is None:
        raise click.UsageError("--report-only needs --run-dir (the finished run to report on)")
    opts = reproduction.ReproduceOptions(data_root=data_root, budget_iters=budget_iters, run_dir=run_dir,
                                         overrides=overrides, train=not report_only, overwrite=overwrite,
                                         seeds=seeds, eval_overrides=eval_overrides)
    path, report = reproduction.reproduce(get_row(row), opts, echo=click.echo)
    click.echo(report)
    click.echo(f"wrote {path}")
