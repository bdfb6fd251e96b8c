"""`dtrain train RECIPE [key=value ...]`: the same as `python -m dtrain.train RECIPE [key=value ...]`."""

from __future__ import annotations

import sys

import click


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("recipe")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def train(recipe: str, overrides: tuple[str, ...]) -> None:
    """Train RECIPE (a name from `dtrain recipes` or a YAML path) with key=value overrides.

    Works alone or under torchrun, e.g. `torchrun --nproc-per-node 2 -m dtrain.train RECIPE`.
    """
    from dtrain.train import main

    code = main([recipe, *overrides])
    if code:
        sys.exit(code)
