"""The error types of data_prep: a one-line message naming the problem and the fix."""

from __future__ import annotations

import click


class DataPrepError(click.ClickException):
    """A user error (bad path, bad option, busy --out): `Error: <message>`, exit status 2, no traceback.

    2 is what `dtrain` promises for every input a user can fix (see dtrain/cli.py).
    """

    exit_code = 2

    def __reduce__(self):  # survives the trip back from a worker process
        return (type(self), (self.message,))


class PrepareFailure(DataPrepError):
    """The run failed, not its input (an FFCV writer process died): exit status 1, as for a
    training failure. Still one line: the child's own error says what happened."""

    exit_code = 1


class VerifyError(DataPrepError):
    """`verify` found an output that differs from its manifest: the data, not the input, is wrong."""

    exit_code = 1
