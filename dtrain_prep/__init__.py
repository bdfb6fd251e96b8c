"""The data-prep tool, as dtrain installs it (`import dtrain_prep`; it never imports dtrain).

Its sources live in the top-level data_prep/ folder; the wheel installs them under this name
(setup.py maps the package). This file exists for runs from a checkout that is not installed
(PYTHONPATH=.): it points the package at those sources, so the same imports work in both.
"""

from pathlib import Path as _Path

__path__ = [str(_Path(__file__).resolve().parent.parent / "data_prep")]
