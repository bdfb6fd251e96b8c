"""Errors a user can fix: the CLI prints them as one line, never as a traceback."""

from dtrain.suggest import did_you_mean  # noqa: F401 (re-exported: the one suggestion helper)


class DtrainError(Exception):
    """Base class for user-facing errors (bad config, bad path, impossible option on this machine)."""


class ConfigError(DtrainError):
    """A config key, value or override is wrong; the message names the key and the fix."""
