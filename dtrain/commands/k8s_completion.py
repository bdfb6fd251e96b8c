"""Shell completion for `dtrain k8s render`: chart values (`nodes=`, `mlflow.enabled=`) and their
values where the chart's schema names them (enums, booleans; `recipe=` the recipes), the training
config under `overrides.` (`overrides.data.loader=dali`), and the bundled files of `--values`.

Everything is read from the chart's values.schema.json, the one list of values `helm` checks too.
"""

from __future__ import annotations

import json
from typing import Any

import click
from click.shell_completion import CompletionItem

from dtrain.commands.k8s_files import bundled_values, chart_dir, describe
from dtrain.commands.overrides import override_items
from dtrain.recipes import recipe_names

OVERRIDES = "overrides."  # the chart value that holds `dtrain train` overrides


def complete_chart_value(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`nod<TAB>` -> `nodes=`, `jobKind=<TAB>` -> PyTorchJob IndexedJob, `labels<TAB>` -> `labels.`."""
    if incomplete.startswith(OVERRIDES):
        return override_items(incomplete[len(OVERRIDES):], prefix=OVERRIDES)
    keys = chart_keys()
    key, sep, value = incomplete.partition("=")
    if not sep:
        return [CompletionItem(name + ("." if _is_map(schema) else "="), help=schema.get("description"))
                for name, schema in keys.items() if name.startswith(incomplete)]
    return [CompletionItem(f"{key}={name}") for name in _value_names(key, keys.get(key, {})) if name.startswith(value)]


def complete_values_file(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """A bundled values name (`resnet200-<TAB>`), or a path once the word looks like one."""
    names = [CompletionItem(name, help=describe(path)) for name, path in bundled_values().items()
             if name.startswith(incomplete)]
    if names and "/" not in incomplete and not incomplete.startswith("."):
        return names
    return [CompletionItem(incomplete, type="file")]


def chart_keys() -> dict[str, dict[str, Any]]:
    """{dotted value name: its schema}, sections of fixed keys (mlflow, data, ...) opened."""
    schema = json.loads((chart_dir() / "values.schema.json").read_text())
    definitions = schema.get("definitions", {})
    keys: dict[str, dict[str, Any]] = {}

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, prop in properties.items():
            if "$ref" in prop:
                prop = definitions.get(prop["$ref"].rsplit("/", 1)[-1], {})
            if prop.get("type") == "object" and prop.get("additionalProperties") is False:
                walk(prop.get("properties", {}), f"{prefix}{name}.")
            else:
                keys[f"{prefix}{name}"] = prop

    walk(schema.get("properties", {}), "")
    return keys


def _is_map(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object"


def _value_names(key: str, schema: dict[str, Any]) -> list[str]:
    if key == "recipe":
        return recipe_names()
    if "enum" in schema:
        return [str(name) for name in schema["enum"]]
    types = schema.get("type")
    return ["true", "false"] if types == "boolean" or (isinstance(types, list) and "boolean" in types) else []
