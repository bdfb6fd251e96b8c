"""Fixtures of the integration tier: tests that start processes (training runs, torchrun, servers,
mp.spawn workers, benchmark scripts). The run-and-check harness of the fault tests is
fault_runs.py beside this file; ports and process trees are tests/processes.py."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from processes import checkout_env as _checkout_env


class SilentServer:
    """Accepts connections and never answers: the tracking server that stalled training."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for connection in [self.sock, *self.held]:
            connection.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def checkout_env() -> dict[str, str]:
    """The environment a child Python process runs this checkout with (processes.checkout_env)."""
    return _checkout_env()
