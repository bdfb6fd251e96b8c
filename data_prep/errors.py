"""The one error type of data_prep: a one-line message naming the problem and the fix."""

from __future__ import annotations

import click


class DataPrepError(click.ClickException):
    """Shown by click as `Error: <message>` with exit status 1, never as a traceback."""

    def __reduce__(self):  # survives the trip back from a worker process
        return (type(self), (self.message,))
