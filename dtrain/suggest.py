"""Did-you-mean suggestions for every unknown name a user can type (config keys, choices, recipes,
models, table rows, k8s values): one place decides what counts as close.

Standard library only, so that dtrain.models (which imports nothing else of dtrain) may use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.5  # difflib ratio below which a name is not offered as a suggestion


def close_matches(name: str, choices: Iterable[str], n: int = 1) -> list[str]:
    """The (at most n) valid names closest to `name`, best first."""
    return difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=CUTOFF)


def did_you_mean(name: str, choices: Iterable[str], prefix: str = "", n: int = 1,
                 fallback: str | None = None) -> str:
    """' (did you mean PREFIXx?)' for the closest choices; otherwise `fallback` when given, else
    ' (valid: a, b, c)' listing every choice."""
    choices = list(choices)
    close = close_matches(name, choices, n)
    if close:
        return f" (did you mean {', '.join(prefix + c for c in close)}?)"
    if fallback is not None:
        return fallback
    return f" (valid: {', '.join(sorted(map(str, choices)))})"
