"""Which peer died: every rank answers a liveness probe, so a survivor can name the lost rank and host.

When a process of the job dies, the survivors learn it from a collective that fails, and the
failure names at best a socket address, often of a neighbour that only stopped because of the
first death (a ring all-reduce fails rank by rank). To name the real cause, each rank listens on
a small TCP port of its own for as long as it lives, and the job shares (rank, host, address,
port) once the process group has formed. A survivor probes every peer when a collective fails:
- connection refused: the peer's process is gone (its host still answers for it);
- no answer within the probe timeout: the host is down or cut off;
- answers "leaving": a survivor on its way out (it lingers briefly so others can tell);
- answers "alive": still there.
torch has no such query (its store lives in rank 0's process, which may be the one that died), so
this is written here; it costs one idle thread and one port per process.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

ALIVE, LEAVING = b"A", b"L"
PROBE_SECONDS = 1.0
LINGER_SECONDS = 2.0
_VERDICT_KEY = "dtrain/lost-peers"  # a leaving survivor stays reachable this long, so later probers count it as alive


@dataclass(frozen=True)
class Peer:
    rank: int
    host: str
    address: str
    port: int


class LivenessListener:
    """Answers each connection with one byte: ALIVE, or LEAVING once `leaving()` was called."""

    def __init__(self) -> None:
        self._status = ALIVE
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("0.0.0.0", 0))
        self._socket.listen(64)
        self.port = self._socket.getsockname()[1]
        threading.Thread(target=self._serve, name="dtrain-liveness", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with connection, contextlib.suppress(OSError):
                connection.sendall(self._status)

    def leaving(self) -> None:
        self._status = LEAVING


def reachable_address(towards: str, port: int) -> str:
    """This host's address on the route to `towards` (the rendezvous host): what peers can reach."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((towards, port))  # UDP: picks a route, sends nothing
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def probe(peer: Peer, timeout: float = PROBE_SECONDS) -> str:
    """'alive', 'leaving', 'gone' (refused: its process ended) or 'unreachable' (no answer)."""
    try:
        with socket.create_connection((peer.address, peer.port), timeout=timeout) as connection:
            connection.settimeout(timeout)
            answer = connection.recv(1)
    except ConnectionRefusedError:
        return "gone"
    except OSError:
        return "unreachable"
    return {ALIVE: "alive", LEAVING: "leaving"}.get(answer, "gone")


def describe_lost(peers: list[Peer], me: int) -> str | None:
    """'rank 3 on node3 (its process ended)', for every peer that is gone or unreachable; None if none."""
    others = [p for p in peers if p.rank != me]
    if not others:
        return None
    with ThreadPoolExecutor(max_workers=min(32, len(others))) as pool:
        states = list(pool.map(probe, others))
    why = {"gone": "its process ended", "unreachable": "its host does not answer: down or cut off"}
    lost = [f"rank {p.rank} on {p.host} ({why[s]})" for p, s in zip(others, states, strict=True) if s in why]
    return ", ".join(lost) if lost else None


def first_verdict(store: Any, mine: str | None, timeout: float = PROBE_SECONDS) -> str | None:
    """The verdict of the first rank that probed, when the store still answers, else `mine`.

    A ring all-reduce fails rank by rank: a rank that learns of the death only when a neighbour
    gave up finds that neighbour gone too. The first verdict, made while the survivors still
    lingered, names only the real loss; compare_set keeps the first one written. The store may be
    on a lost host: the exchange runs in a daemon thread and is abandoned after `timeout`.
    """
    if store is None:
        return mine
    answer: list[str | None] = [mine]

    def exchange() -> None:
        try:
            if mine is not None:
                answer[0] = store.compare_set(_VERDICT_KEY, "", mine).decode() or mine
            elif store.check([_VERDICT_KEY]):
                answer[0] = store.get(_VERDICT_KEY).decode() or None
        except Exception:  # noqa: BLE001 - the store's host may be the lost one: keep our own view
            pass

    worker = threading.Thread(target=exchange, name="dtrain-verdict", daemon=True)
    worker.start()
    worker.join(timeout)
    return answer[0]


class PeerDirectory:
    """This process's listener plus the job's table of peers (set once the group has formed)."""

    def __init__(self) -> None:
        self.listener = LivenessListener()
        self.peers: list[Peer] = []
        self.rank = 0
        self.store: Any = None  # this attempt's store, where the first verdict is shared

    def me(self, rank: int, rendezvous_host: str, rendezvous_port: int) -> Peer:
        self.rank = rank
        return Peer(rank, socket.gethostname(), reachable_address(rendezvous_host, rendezvous_port),
                    self.listener.port)

    def lost_peers(self) -> str | None:
        """Mark this rank as leaving and say which peers are lost (call linger() before exiting)."""
        self.listener.leaving()
        self._left_at = time.monotonic()
        return first_verdict(self.store, describe_lost(self.peers, self.rank))

    def linger(self) -> None:
        """Stay reachable (answering "leaving") until LINGER_SECONDS after lost_peers(), so that a
        survivor that learns of the failure later does not take this rank for a dead one."""
        left_at = getattr(self, "_left_at", None)
        if left_at is not None:
            time.sleep(max(0.0, LINGER_SECONDS - (time.monotonic() - left_at)))


_directory: PeerDirectory | None = None


def start_directory() -> PeerDirectory:
    global _directory
    if _directory is None:
        _directory = PeerDirectory()
    return _directory


def directory() -> PeerDirectory | None:
    """The directory of a formed process group, None in a single process."""
    return _directory if _directory is not None and _directory.peers else None
