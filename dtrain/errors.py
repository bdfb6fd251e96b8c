"""Errors a user can fix: the CLI prints them as one line, never as a traceback."""

import difflib


class DtrainError(Exception):
    """Base class for user-facing errors (bad config, bad path, impossible option on this machine)."""


class ConfigError(DtrainError):
    """A config key, value or override is wrong; the message names the key and the fix."""


def did_you_mean(key: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    return f" (did you mean {prefix}{close[0]}?)" if close else f" (valid: {', '.join(sorted(choices))})"
