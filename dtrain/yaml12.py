"""YAML with the scalar rules of YAML 1.2 (core schema), for recipes and `key=value` overrides alike.

PyYAML resolves plain scalars by YAML 1.1: `1e-3` (no dot) stays a string while `1.0e-3` is a
float, and `yes`, `no`, `on`, `off` become booleans. Users write `optim.lr=1e-3` and
`tracking.run_name=no`, so floats follow YAML 1.2 (`1e-3`, `5E-5`, `.1`, `1.`, `.inf`) and only
true/false are booleans; integers are decimal (`0755` is 755), `0x`/`0o` prefixed, and keep
PyYAML's digit separators (`1_000`); dates stay strings.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_INT = re.compile(r"^(?:[-+]?[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+)$")
# YAML 1.2 has no implicit timestamps either: a run named 2026-01-01 stays a string.
_DROPPED = {f"tag:yaml.org,2002:{kind}" for kind in ("bool", "float", "int", "timestamp")}


# libyaml's parser when PyYAML has it: ~5x faster, and `dtrain recipes` reads every recipe file.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Loader(_SAFE_LOADER):  # type: ignore[misc,valid-type]
    """yaml.SafeLoader (libyaml's when installed) with YAML 1.2 booleans and floats."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
# Integers first: a scalar matching both (e.g. `10`) is an int.
Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+.0123456789"))


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = loader.construct_scalar(node).replace("_", "").lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    if text == ".nan":
        return float("nan")
    return float(text)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    return int(text, 0) if text[:2] in ("0x", "0o") else int(text, 10)


Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load(text: str) -> Any:
    """Parse one YAML document with the rules above."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)
