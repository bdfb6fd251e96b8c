"""`dtrain models [PATTERN...]`: every network of both papers with its parameters and multiply-adds."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from typing import Any

import click

from dtrain import models as zoo
from dtrain.models.lookup import suggestion

_TABLE_COLUMNS = (  # header, width, right-aligned
    ("name", 18, False),
    ("family", 8, False),
    ("depth", 5, True),
    ("paper", 5, False),
    ("input", 5, True),
    ("params", 9, True),
    ("mult-adds", 9, True),
)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Shell-style patterns (`resnet*_preact`) match whole names; plain words match substrings."""
    if not patterns:
        return True
    for pattern in patterns:
        if any(char in pattern for char in "*?["):
            if fnmatch.fnmatchcase(name, pattern):
                return True
        elif pattern in name:
            return True
    return False


def _row(name: str) -> dict[str, Any]:
    params, multiply_adds = zoo.named_complexity(name)
    return {**dataclasses.asdict(zoo.info(name)), "params": params, "multiply_adds": multiply_adds}


def _format_row(cells: tuple[str, ...]) -> str:
    parts = [
        cell.rjust(width) if right else cell.ljust(width)
        for cell, (_, width, right) in zip(cells, _TABLE_COLUMNS, strict=True)
    ]
    return "  ".join(parts).rstrip()


def _table_cells(row: dict[str, Any]) -> tuple[str, ...]:
    return (
        str(row["name"]),
        str(row["family"]),
        str(row["depth"]),
        str(row["paper"]),
        str(row["native_input"]),
        f"{int(row['params']) / 1e6:.2f}M",
        _giga_or_mega(int(row["multiply_adds"])),
    )


def _giga_or_mega(count: int) -> str:
    return f"{count / 1e9:.2f}G" if count >= 1e9 else f"{count / 1e6:.1f}M"


def _print_options() -> None:
    click.echo("Options of models.build(name, num_classes=None, **options) and of a recipe's model section:")
    click.echo("  unit            " + ", ".join(zoo.UNIT_LAYOUTS) + "  (R2 Fig. 4 a-e; letters a-e work too)")
    click.echo("  shortcut        " + ", ".join(zoo.SHORTCUT_OPTIONS) + "  (R1 options; none = plain net)")
    click.echo("  shortcut_mode   " + ", ".join(zoo.SHORTCUT_MODES) + "  (R2 Table 1)")
    click.echo("  scale_residual, scale_shortcut (constant_scaling); gate_bias (gating modes);")
    click.echo("  shortcut_dropout (dropout_shortcut); stride_in_1x1 (bottleneck stride on the 1x1, as R1);")
    click.echo("  zero_init_residual (last BN of every residual branch starts at 0).")
    click.echo("Beyond the papers: stochastic_depth (the last unit's drop rate, linear in depth; Huang et al. 2016),")
    click.echo("  stochastic_depth_mode row|batch; blurpool (3x3 binomial blur before each stride-2 conv; Zhang 2019).")
    click.echo("Any CIFAR depth: build('cifar_resnet', depth=6n+2) or depth=9n+2 with bottleneck=True.")


@click.command("models")
@click.argument("patterns", nargs=-1)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json: one object per net, raw integer counts, for scripts.",
)
@click.option("--family", type=click.Choice(["imagenet", "cifar"]), default=None, help="Only this family.")
@click.option("--options", "show_options", is_flag=True, help="List the build options (unit types, shortcuts).")
def models(patterns: tuple[str, ...], output_format: str, family: str | None, show_options: bool) -> None:
    """List the networks of R1 and R2: family, depth, paper, params and multiply-adds.

    Multiply-adds are counted from the built module graph (every conv and fc) for one image at
    the net's native input (224x224 ImageNet, 32x32 CIFAR). PATTERN filters names: a word matches
    as a substring (`preact`), a shell pattern matches whole names (`'resnet*_v1_5'`).

    \b
    Examples:
      dtrain models
      dtrain models preact --family cifar
      dtrain models resnet50 --format json
    """
    if show_options:
        _print_options()
        return
    selected = [
        name for name in zoo.names() if _matches(name, patterns) and (family is None or zoo.info(name).family == family)
    ]
    if not selected:
        what = " ".join(patterns) or "any name"
        hint = suggestion(patterns[0], zoo.names()) if patterns else ""
        raise click.UsageError(f"no model matches {what!r}{f' in family {family}' if family else ''}.{hint}")

    if output_format == "json":
        click.echo(json.dumps([_row(name) for name in selected], indent=2))
        return
    # Rows are printed as they are counted: the deepest nets take about a second each on a CPU.
    click.echo(_format_row(tuple(header for header, _, _ in _TABLE_COLUMNS)))
    for name in selected:
        click.echo(_format_row(_table_cells(_row(name))))
