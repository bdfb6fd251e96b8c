"""The names a registry of dtrain.validation.CHOICES holds, read from its module's source without
importing the module.

The registries live beside the code that implements them, in modules that import torch (seconds:
10 s wall measured on a busy machine). `dtrain keys`, `dtrain train --help` and shell completion
need only the names, so they read the registry's literal: a dict's keys or a tuple's items, where
an item may be a string, a name assigned in that module or imported from another dtrain module
(`AUTO`), or `*OTHER`. A registry built any other way gives None, and the caller imports it
(slow but right); tests/unit/test_config_choices.py holds every registry readable and equal to
the imported one.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # dtrain/
MAX_DEPTH = 8  # name lookups followed before giving up (a registry is a line or two away)

Entry = ast.expr | tuple[str, str]  # an assigned expression, or (module, name) it is imported from


class Unreadable(Exception):
    """The registry is not a literal this reader follows."""


def registry_names(source: str) -> list[str] | None:
    """The names of the registry at "module:ATTRIBUTE", or None when it cannot be read statically."""
    module, _, attribute = source.partition(":")
    try:
        value = _lookup(module, attribute, 0)
    except (Unreadable, OSError, SyntaxError):
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        return None
    return value


def _module_file(module: str) -> Path:
    head, *parts = module.split(".")
    if head != "dtrain":
        raise Unreadable(module)
    base = PACKAGE_DIR.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise Unreadable(module)


@functools.cache
def _top_level(module: str) -> dict[str, Entry]:
    path = _module_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: dict[str, Entry] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            names[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            names[node.target.id] = node.value
        elif isinstance(node, ast.ImportFrom):
            origin = _absolute(package, node)
            for alias in node.names:
                names[alias.asname or alias.name] = (origin, alias.name)
    return names


def _absolute(package: str, node: ast.ImportFrom) -> str:
    """The module a `from ... import` names, relative imports resolved against `package`."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _lookup(module: str, name: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise Unreadable(name)
    entry = _top_level(module).get(name)
    if entry is None:
        raise Unreadable(f"{module}.{name}")
    if isinstance(entry, tuple):
        return _lookup(entry[0], entry[1], depth + 1)
    return _evaluate(module, entry, depth)


def _evaluate(module: str, node: ast.expr, depth: int) -> Any:
    """A string, or the list of names a dict (its keys), tuple or list literal holds."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return _lookup(module, node.id, depth + 1)
    if isinstance(node, ast.Dict) and all(key is not None for key in node.keys):
        return [_evaluate(module, key, depth) for key in node.keys]  # type: ignore[arg-type]
    if isinstance(node, (ast.Tuple, ast.List)):
        items: list[Any] = []
        for element in node.elts:
            if isinstance(element, ast.Starred):
                spread = _evaluate(module, element.value, depth)
                if not isinstance(spread, list):
                    raise Unreadable(ast.dump(element))
                items += spread
            else:
                items.append(_evaluate(module, element, depth))
        return items
    raise Unreadable(ast.dump(node)[:80])
