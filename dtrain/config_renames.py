"""Config keys renamed after they shipped, read as their new names.

A recipe, an override, a checkpoint's saved config or a run's fingerprint written with an old key
means the same run: dtrain.resolve.typed translates the nested mapping before the dataclasses are
built, dtrain.checkpoint.fingerprint the flattened settings a run directory recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dtrain.errors import ConfigError

# old dotted key -> (new dotted key, the old value as a new one). Keys are one section deep (section.key).
RENAMED_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "optim.no_decay_bn_bias": ("optim.no_decay", lambda on: "norm_and_bias" if on else "none"),
}


def renamed(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` (nested sections) with every old key of RENAMED_KEYS as its new key; both at once is an
    error (which one was meant is not known)."""
    raw = dict(raw)
    for old, (new, translate) in RENAMED_KEYS.items():
        section, _, leaf = old.partition(".")
        node = raw.get(section)
        if not isinstance(node, dict) or leaf not in node:
            continue
        node = dict(node)
        value = node.pop(leaf)
        new_leaf = new.partition(".")[2]
        if new_leaf in node:
            raise ConfigError(f"{old} (now {new}) and {new} are both set; keep {new} only")
        node[new_leaf] = translate(value)
        raw[section] = node
    return raw


def renamed_flat(flat: dict[str, Any]) -> dict[str, Any]:
    """The same for flattened settings (a fingerprint's): the old key's value translated to the new
    key, unless the new key is recorded too."""
    flat = dict(flat)
    for old, (new, translate) in RENAMED_KEYS.items():
        if old in flat:
            flat.setdefault(new, translate(flat.pop(old)))
    return flat
