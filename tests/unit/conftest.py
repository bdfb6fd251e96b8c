"""Fixtures of the unit tier: everything here runs inside the pytest process (no subprocess,
torchrun, mp.spawn or server: those tests sit in tests/integration/)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prepared(make_prepared: Callable[..., Path]) -> Path:
    """The default tiny prepared dataset (3 classes, train/val, varied image sizes), read-only:
    shared by the loader tests that need no particular counts or sizes."""
    return make_prepared("prepared")
