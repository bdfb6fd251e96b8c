"""`dtrain train RECIPE [key=value ...]`: the same as `python -m dtrain.train RECIPE [key=value ...]`."""

from __future__ import annotations

import sys

import click

from dtrain.cli import AS_PROGRAM
from dtrain.commands.overrides import all_overrides, complete_override, complete_recipe, sections_epilog, set_option


@click.command(context_settings={"ignore_unknown_options": True}, epilog=sections_epilog())
@click.argument("recipe", shell_complete=complete_recipe)
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED, shell_complete=complete_override)
@set_option
def train(recipe: str, overrides: tuple[str, ...], sets: tuple[str, ...]) -> None:
    """Train RECIPE (a name from `dtrain recipes` or a YAML path) with KEY=VALUE overrides.

    Works alone or under torchrun, e.g. `torchrun --nproc-per-node 2 -m dtrain.train RECIPE`.
    Ctrl-C (like SIGTERM) checkpoints at the next step and prints how to resume; a second
    Ctrl-C aborts at once. `train.smoke=true` dry-runs a big recipe on a small machine.
    """
    # Imported here, not at the top: `dtrain train --help` and the shell completion of its keys load
    # this module and answer without torch (tests/unit/test_cli_no_torch.py); training needs it.
    from dtrain.distributed.lifetime import exit_within
    from dtrain.training import run_recipe

    code = run_recipe(recipe, all_overrides(overrides, sets))
    if (click.get_current_context().obj or {}).get(AS_PROGRAM):
        exit_within(code)  # gone soon after the last line, whatever a library's exit hooks wait for
    if code:
        sys.exit(code)


def help_text() -> str:
    """`dtrain train --help`, for `python -m dtrain.train --help`."""
    with click.Context(train, info_name="python -m dtrain.train") as ctx:
        return train.get_help(ctx)
