"""Name lookup with a helpful error: unknown names come back with the closest valid ones."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from dtrain.suggest import close_matches

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """An unknown model, unit or option name. A KeyError and a ValueError, so either catch works;
    str() is the plain message (KeyError's default str() would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def suggestion(name: str, valid: Iterable[str]) -> str:
    """' Did you mean: a, b?' for the closest valid names, else the full list of valid names."""
    valid = list(valid)
    close = close_matches(name, valid, n=3)
    if close:
        return f" Did you mean: {', '.join(close)}?"
    return f" Valid: {', '.join(valid)}."


def lookup(mapping: Mapping[str, T], name: str, what: str) -> T:
    """mapping[name], or UnknownNameError naming `what`, the bad name and the closest valid names."""
    try:
        return mapping[name]
    except (KeyError, TypeError):
        raise UnknownNameError(f"unknown {what} {name!r}.{suggestion(str(name), mapping)}") from None
