"""Fixtures every tier shares.

Plain helpers live in modules beside this file (tests/ is on sys.path, pyproject's pytest
`pythonpath`), for the code that runs where no fixture reaches (a worker started by mp.spawn, a
module-level skip condition): processes.py owns ports, the silent server, the checkout's
environment and process-tree walks; prepared_data.py writes the tiny prepared dataset;
helm_tool.py finds the pinned helm. tests/unit/ runs in this process (static checkers aside:
helm lint/template and hadolint read a file and answer); whatever starts a process of ours (a
Python child, torchrun, mp.spawn, a server, a benchmark script) sits in tests/integration/.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prepared_data import write_prepared
from processes import CHECKOUT_PYTHONPATH, SilentServer


def pytest_configure(config: pytest.Config) -> None:
    """Child processes (training runs, torchrun, scripts) run this checkout's code, as this process
    does (pyproject's pytest pythonpath), whether or not an install points elsewhere."""
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [CHECKOUT_PYTHONPATH, os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def make_prepared(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make_prepared(name, **options): a tiny prepared dataset (write_prepared's options) in a
    fresh folder; session-scoped, so module-scoped fixtures can build theirs with it."""

    def make(name: str = "prepared", **options) -> Path:
        return write_prepared(tmp_path_factory.mktemp(name), **options)

    return make


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    """A loopback server that accepts connections and never answers (a stalled tracking server,
    a peer host that does not respond); closed after the test."""
    server = SilentServer()
    yield server
    server.close()
