"""The `dtrain` command: a click group whose subcommands live in their own modules.

Subcommands are imported only when used, so `dtrain --help` stays fast and a missing optional
dependency (DALI, FFCV, DeepSpeed) breaks only the command that needs it.
"""

from __future__ import annotations

import importlib
import sys

import click
from click.shell_completion import add_completion_class

from dtrain import __version__
from dtrain.commands.completion import KeyValueBashComplete
from dtrain.errors import DtrainError
from dtrain.extras import missing_module_message
from dtrain.provenance import git_commit, git_dirty, source_digest

# name -> "module:attribute" of a click command or group.
LAZY_COMMANDS: dict[str, str] = {
    "demo": "dtrain.commands.demo:demo",
    "prepare": "dtrain_prep.cli:prepare",
    "train": "dtrain.commands.train:train",
    "eval": "dtrain.commands.evaluate:evaluate",
    "models": "dtrain.commands.models:models",
    "recipes": "dtrain.commands.recipes:recipes",
    "show-config": "dtrain.commands.recipes:show_config",
    "keys": "dtrain.commands.recipes:keys",
    "bench": "dtrain.commands.bench:bench",
    "plot": "dtrain.commands.plot:plot",
    "analyze": "dtrain.commands.analyze:analyze",
    "experiment": "dtrain.commands.experiment:experiment",
    "reproduce": "dtrain.commands.reproduce:reproduce",
    "k8s": "dtrain.commands.k8s:k8s",
    "mlflow-server": "dtrain.commands.mlflow_server:mlflow_server",
    "mlflow-sync": "dtrain.commands.mlflow_sync:mlflow_sync",
}

_SHORT_HELP = {
    "demo": "Prepare the bundled digits, train a ResNet on them, log to MLflow.",
    "prepare": "Write ImageNet/CIFAR/digits/folders into FFCV, DALI and Parquet formats.",
    "train": "Train a recipe (same as python -m dtrain.train).",
    "eval": "Evaluate a checkpoint (centre, ten-crop, multi-scale, 320 crop).",
    "models": "List every network of both papers with params and multiply-adds.",
    "recipes": "List the paper recipes.",
    "show-config": "Print the resolved config of a recipe with overrides.",
    "keys": "List every config key with type, default and meaning.",
    "bench": "Loader, model and end-to-end throughput benchmarks.",
    "plot": "Training/test error curves of runs, as in the papers' figures.",
    "analyze": "Analyses from the papers (layer responses).",
    "experiment": "Run the papers' experiments (degradation).",
    "reproduce": "Reproduce a table row of the papers and write a report.",
    "k8s": "Render Kubernetes manifests for a cluster run.",
    "mlflow-server": "Start the MLflow tracking server the nodes log to.",
    "mlflow-sync": "Send MLflow what a run kept only in its metrics.jsonl.",
}


# bash: key=value stays one word, and no space after `optim.lr=` (dtrain/commands/completion.py).
add_completion_class(KeyValueBashComplete)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            why = missing_module_message(exc.name)
            return _unavailable(name, why or f"needs the module {exc.name!r}, which is not installed; install "
                                             "dtrain with its extras (see README)")
        return getattr(module, attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help comes from a table so that listing commands imports nothing.
        rows = [(name, _SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, why: str) -> click.Command:
    @click.command(name=name, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        raise DtrainError(f"'dtrain {name}' {why}")

    return command


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """dtrain's version and the code it runs: what a run records as tags (version.dtrain,
    source.digest, git.commit), so a run's code can be found from any install."""
    if not value or ctx.resilient_parsing:
        return
    commit = git_commit()
    git = f", git {commit}{'+dirty' if git_dirty() else ''}" if commit else ""
    click.echo(f"dtrain {__version__} (source {source_digest()}{git})")
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and the digest of the code (as a run records them), and exit.")
def cli() -> None:
    """dtrain: train the ResNets of He et al. with the papers' recipes, from one CPU to many nodes."""


# ctx.obj of every command: {AS_PROGRAM: True} when main() runs as the program (argv None:
# `dtrain ...`, `python -m dtrain`), not called in-process (tests, other tools).
AS_PROGRAM = "as_program"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user-fixable errors become one line on stderr and exit code 2."""
    try:
        cli.main(args=argv, standalone_mode=False, obj={AS_PROGRAM: argv is None})
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DtrainError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:  # an optional part imported where it is used
        why = missing_module_message(exc.name)
        if why is None:
            raise
        click.echo(f"Error: this command {why}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
