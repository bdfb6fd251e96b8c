"""A survivor names the peer that died: liveness probes and the shared first verdict."""

from __future__ import annotations

import socket

from processes import free_port

from dtrain.distributed.failure import peer_failure_line
from dtrain.distributed.peers import LivenessListener, Peer, PeerDirectory, describe, probe, probe_all


def test_probe_tells_alive_leaving_gone_and_silent_apart(silent_server) -> None:
    alive, leaving = LivenessListener(), LivenessListener()
    leaving.leaving()
    peers = [Peer(0, "me", "127.0.0.1", alive.port), Peer(1, "node1", "127.0.0.1", leaving.port),
             Peer(2, "node2", "127.0.0.1", free_port()), Peer(3, "node3", "127.0.0.1", silent_server.port)]
    assert [probe(p, timeout=0.5) for p in peers] == ["alive", "leaving", "gone", "unreachable"]
    others = peers[1:]
    assert describe(others, probe_all(others)) == ("rank 2 on node2 (its process ended), "
                                          "rank 3 on node3 (its host does not answer: down or cut off)")


def test_a_later_survivor_repeats_the_verdict_it_was_handed() -> None:
    """A rank that learns of the death only when its neighbour gave up would find that neighbour
    gone too; the first survivor hands its verdict to every peer still there."""
    early, late = PeerDirectory(), PeerDirectory()
    dead = Peer(2, "node2", "127.0.0.1", free_port())
    early.peers = late.peers = [Peer(0, "node0", "127.0.0.1", early.listener.port),
                                Peer(1, "node1", "127.0.0.1", late.listener.port), dead]
    early.rank, late.rank = 0, 1
    assert early.lost_peers() == "rank 2 on node2 (its process ended)"
    early.listener.close()  # the early survivor has exited by the time the late one fails
    assert late.lost_peers() == "rank 2 on node2 (its process ended)"


def test_peer_failure_line_is_one_line_naming_this_rank_and_the_cause() -> None:
    line = peer_failure_line(RuntimeError("[pair.cc:537] Read error [10.0.0.3]:1224: Connection reset by peer"),
                             rank=1, world_size=4)
    assert "\n" not in line and line.startswith(f"dtrain: [rank 1/4 on {socket.gethostname()}] stopping: ")
    assert "Connection reset by peer" in line and "resumes from the newest checkpoint" in line
