"""`dtrain recipes` and `dtrain show-config`: what can be trained, and with which exact values."""

from __future__ import annotations

import json

import click

from dtrain.commands.overrides import (
    all_overrides,
    complete_override,
    complete_recipe,
    key_rows,
    sections,
    set_option,
)
from dtrain.config import RunConfig, dump_yaml, to_dict
from dtrain.errors import ConfigError
from dtrain.recipes import find_recipe, recipe_names
from dtrain.resolve import load_config, recipe_config
from dtrain.suggest import did_you_mean


@click.command()
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table")
def recipes(output_format: str) -> None:
    """List the recipes (one per paper setting) that `dtrain train RECIPE` accepts."""
    rows = []
    for name in recipe_names():
        config = recipe_config(name)  # values are checked when a recipe is used, not to list it
        rows.append(
            {
                "recipe": name,
                "model": config.model.name,
                "classes": config.model.num_classes,
                "batch": config.optim.batch_size,
                "lr": config.optim.lr,
                "schedule": _schedule_summary(config),
                "paper": config.paper,
                "path": str(find_recipe(name)),
                "description": config.description,
            }
        )
    if output_format == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("recipe", "model", "classes", "batch", "lr", "schedule", "paper")
    table = [header] + [tuple(str(row[key]) for key in header) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _schedule_summary(config: RunConfig) -> str:
    schedule = config.schedule
    if schedule.kind == "step_iters":
        text = f"/10 at iters {schedule.milestones}, stop {schedule.max_iters}"
    elif schedule.kind == "step_epochs":
        text = f"/10 at epochs {schedule.milestones}, {schedule.epochs} epochs"
    elif schedule.kind == "plateau":
        end = f"{schedule.max_iters} iters" if schedule.max_iters else f"{schedule.epochs} epochs"
        text = f"/10 on plateau, up to {end}"
    else:
        text = schedule.kind
    if schedule.warmup_until_err is not None:
        text += (f", warm-up {schedule.warmup_lr} until training error < {schedule.warmup_until_err:g}% "
                 f"(at most {schedule.warmup_iters} iters)")
    elif schedule.warmup != "none":
        length = f"{schedule.warmup_epochs} epochs" if schedule.warmup_epochs else f"{schedule.warmup_iters} iters"
        text += f", {schedule.warmup} warm-up {schedule.warmup_lr} for {length}"
    return text


@click.command("show-config")
@click.argument("recipe", shell_complete=complete_recipe)
@click.argument("overrides", nargs=-1, shell_complete=complete_override)
@set_option
@click.option("--format", "output_format", type=click.Choice(["yaml", "json"]), default="yaml")
def show_config(recipe: str, overrides: tuple[str, ...], sets: tuple[str, ...], output_format: str) -> None:
    """Print the resolved config of RECIPE with KEY=VALUE OVERRIDES applied."""
    config = load_config(recipe, all_overrides(overrides, sets))
    if output_format == "json":
        click.echo(json.dumps(to_dict(config), indent=2))
    else:
        click.echo(dump_yaml(config), nl=False)


def _complete_section(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [row.key for row in sections() if row.key.startswith(incomplete)]


@click.command("keys")
@click.argument("section", required=False, shell_complete=_complete_section)
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table")
def keys(section: str | None, output_format: str) -> None:
    """List every config key (or those of SECTION) with its type, default and meaning."""
    names = [row.key for row in sections()]
    if section is not None and section not in names:
        raise ConfigError(f"unknown config section {section!r}{did_you_mean(section, names)}")
    rows = key_rows(section)
    if output_format == "json":
        click.echo(json.dumps([{"key": r.key, "type": r.type, "default": r.default, "help": r.help} for r in rows],
                              indent=2))
        return
    table = [(r.key, r.type, json.dumps(r.default), r.help) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line[:3], widths, strict=True)) + "  " + line[3])
