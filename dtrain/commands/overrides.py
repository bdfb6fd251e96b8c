"""One override syntax for every command that takes a recipe: `K=V` positional, `--set K=V` alias.

Also what describes the keys (`dtrain keys`, `dtrain train --help`) and click's shell completion
of recipe names and keys, all read from the RunConfig dataclasses and their field metadata.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import click
from click.shell_completion import CompletionItem

from dtrain.commands.registry_names import registry_names
from dtrain.config import RunConfig
from dtrain.recipes import recipe_names
from dtrain.validation import NAMED_KEYS, choices

SET_HELP = "A config override KEY=VALUE, the same as a positional KEY=VALUE (repeatable)."


@dataclasses.dataclass(frozen=True)
class KeyRow:
    key: str  # dotted, e.g. optim.lr
    type: str
    default: Any
    help: str


def _type_name(hint: Any) -> str:
    text = str(hint) if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))
    return text.replace("typing.", "").replace("NoneType", "None")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    factory = f.default_factory
    return factory() if callable(factory) else None


def sections() -> list[KeyRow]:
    """The sections of a RunConfig (model, data, optim, ...) with their one-line help."""
    hints = typing.get_type_hints(RunConfig)
    return [KeyRow(f.name, hints[f.name].__name__, None, f.metadata.get("help", ""))
            for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(hints[f.name])]


def listed_choices(key: str) -> list[str]:
    """The names `key` accepts, read from its registry's source: `dtrain keys` and completion answer
    at once, without importing torch (validation imports the registries themselves)."""
    names = registry_names(NAMED_KEYS[key])
    return names if names is not None else choices(key)


def _help(key: str, f: dataclasses.Field[Any]) -> str:
    """The field's help with `{choices}` filled in from the key's registry."""
    text = f.metadata.get("help", "")
    return text.replace("{choices}", " | ".join(listed_choices(key))) if "{choices}" in text else text


def key_rows(section: str | None = None) -> list[KeyRow]:
    """Every settable key (or those of one section) with type, default and help."""
    rows = []
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        hint = hints[f.name]
        if not dataclasses.is_dataclass(hint):
            rows.append(KeyRow(f.name, _type_name(hint), _default(f), _help(f.name, f)))
            continue
        inner = typing.get_type_hints(hint)
        rows += [KeyRow(f"{f.name}.{g.name}", _type_name(inner[g.name]), _default(g), _help(f"{f.name}.{g.name}", g))
                 for g in dataclasses.fields(hint)]
    if section is None:
        return rows
    return [row for row in rows if row.key.startswith(section + ".")]


def all_overrides(overrides: tuple[str, ...], sets: tuple[str, ...]) -> list[str]:
    """Positional overrides, then the --set ones (later ones win, as on the command line)."""
    return [*overrides, *sets]


def complete_recipe(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(name) for name in recipe_names() if name.startswith(incomplete)]


# Keys whose value is a path: the shell completes it (bash: only the part after the '=').
PATH_VALUES = {"data.root": "dir", "run_dir": "dir", "checkpoint.dir": "dir", "distributed.deepspeed_config": "file"}


def complete_override(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`optim.l<TAB>` -> `optim.lr=`; after the '=' the key's values: `data.loader=<TAB>` -> its
    registry's names, a bool -> true/false, a path key -> paths."""
    return override_items(incomplete)


def override_items(incomplete: str, prefix: str = "") -> list[CompletionItem]:
    """Completions of one config override; `prefix` is what the word carries before the key
    (`overrides.` in a chart value of `dtrain k8s render`)."""
    key, sep, value = incomplete.partition("=")
    if not sep:
        return [CompletionItem(f"{prefix}{row.key}=", help=row.help) for row in key_rows()
                if row.key.startswith(incomplete)]
    path_kind = PATH_VALUES.get(key) or ("file" if key == "checkpoint.resume" and "/" in value else None)
    if path_kind:
        return [CompletionItem(value, type=path_kind)]
    return [CompletionItem(f"{prefix}{key}={name}") for name in value_names(key) if name.startswith(value)]


def value_names(key: str) -> list[str]:
    """The values worth offering for a config key: registry names, or true/false."""
    if key in NAMED_KEYS:
        return listed_choices(key)
    row = next((row for row in key_rows() if row.key == key), None)
    if row is None or not row.type.startswith("bool"):
        return []
    # bool | str: train.channels_last, which also takes auto (dtrain.validation.check_choices)
    return ["true", "false", "auto"] if "str" in row.type else ["true", "false"]


def set_option(function: Any) -> Any:
    """The --set KEY=VALUE option (the alias of positional overrides)."""
    return click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP,
                        shell_complete=complete_override)(function)


def sections_epilog() -> str:
    """The text under `dtrain train --help`: one line per section and where to see the values."""
    width = max(len(row.key) for row in sections())
    lines = ["\b", "Config sections (override any key as SECTION.KEY=VALUE):"]
    lines += [f"  {row.key.ljust(width)}  {row.help}" for row in sections()]
    lines += ["", "\b", "Every key with type, default and help:  dtrain keys [SECTION]",
              "The resolved values of a recipe:        dtrain show-config RECIPE [KEY=VALUE ...]"]
    return "\n".join(lines)
