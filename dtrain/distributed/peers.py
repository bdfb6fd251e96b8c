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
The first survivors to probe hand their verdict to every peer still there (a rank that learns of
the death later, from a neighbour that gave up, would otherwise blame that neighbour too).
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

ALIVE, LEAVING = b"A", b"L"
PROBE_SECONDS = 1.0
LINGER_SECONDS = 2.0
_VERDICT_BYTES = 4096  # a leaving survivor stays reachable this long, so later probers count it as alive


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
        self.heard: str | None = None  # the first verdict a leaving peer handed over
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
                connection.settimeout(PROBE_SECONDS)
                told = connection.recv(_VERDICT_BYTES)  # empty for a probe, a verdict from tell()
                if told and self.heard is None:
                    self.heard = told.decode(errors="replace")

    def leaving(self) -> None:
        self._status = LEAVING

    def close(self) -> None:
        """Stop answering, as the process's exit would."""
        self._socket.close()


def reachable_address(towards: str, port: int) -> str:
    """This host's address on the route to `towards` (the rendezvous host): what peers can reach."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((towards, port))  # UDP: picks a route, sends nothing
            return str(probe.getsockname()[0])  # (host, port) of an AF_INET socket
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


def probe_all(peers: list[Peer]) -> list[str]:
    if not peers:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(peers))) as pool:
        return list(pool.map(probe, peers))


def describe(peers: list[Peer], states: list[str]) -> str | None:
    """'rank 3 on node3 (its process ended)', for every peer that is gone or unreachable; None if none."""
    why = {"gone": "its process ended", "unreachable": "its host does not answer: down or cut off"}
    lost = [f"rank {p.rank} on {p.host} ({why[s]})" for p, s in zip(peers, states, strict=True) if s in why]
    return ", ".join(lost) if lost else None


def tell(peer: Peer, verdict: str, timeout: float = PROBE_SECONDS) -> None:
    """Hand `verdict` to a peer that is still there; it keeps the first one it hears."""
    try:
        with socket.create_connection((peer.address, peer.port), timeout=timeout) as connection:
            connection.settimeout(timeout)
            connection.recv(1)
            connection.sendall(verdict.encode()[:_VERDICT_BYTES])
    except OSError:
        pass


class PeerDirectory:
    """This process's listener plus the job's table of peers (set once the group has formed)."""

    def __init__(self) -> None:
        self.listener = LivenessListener()
        self.peers: list[Peer] = []
        self.rank = 0
        self._left_at: float | None = None

    def me(self, rank: int, rendezvous_host: str, rendezvous_port: int) -> Peer:
        self.rank = rank
        return Peer(rank, socket.gethostname(), reachable_address(rendezvous_host, rendezvous_port),
                    self.listener.port)

    def lost_peers(self) -> str | None:
        """Mark this rank as leaving and say which peers are lost (call linger() before exiting).

        A ring all-reduce fails rank by rank: a rank that learns of the death only when a
        neighbour gave up would find that neighbour gone too. So the first ranks to probe hand
        their verdict to every peer still there, and a later rank repeats what it was told.
        """
        self.listener.leaving()
        self._left_at = time.monotonic()
        if self.listener.heard is not None:
            return self.listener.heard
        others = [p for p in self.peers if p.rank != self.rank]
        states = probe_all(others)
        verdict = describe(others, states)
        if verdict is not None:
            with ThreadPoolExecutor(max_workers=min(32, len(others))) as pool:
                for peer, state in zip(others, states, strict=True):
                    if state in ("alive", "leaving"):
                        pool.submit(tell, peer, verdict)
        return verdict

    def linger(self) -> None:
        """Stay reachable (answering "leaving") until LINGER_SECONDS after lost_peers(), so that a
        survivor that learns of the failure later does not take this rank for a dead one."""
        if self._left_at is not None:
            time.sleep(max(0.0, LINGER_SECONDS - (time.monotonic() - self._left_at)))


_directory: PeerDirectory | None = None


def start_directory() -> PeerDirectory:
    global _directory
    if _directory is None:
        _directory = PeerDirectory()
    return _directory


def directory() -> PeerDirectory | None:
    """The directory of a formed process group, None in a single process."""
    return _directory if _directory is not None and _directory.peers else None
