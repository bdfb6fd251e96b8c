"""A survivor names the peer that died: liveness probes and the shared first verdict."""

from __future__ import annotations

import datetime
import socket

import torch.distributed as dist

from dtrain.distributed.failure import peer_failure_line
from dtrain.distributed.peers import LivenessListener, Peer, describe_lost, first_verdict, probe


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nobody listens there once closed: connections are refused


def test_probe_tells_alive_leaving_gone_and_silent_apart() -> None:
    alive, leaving = LivenessListener(), LivenessListener()
    leaving.leaving()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts in the kernel but never answers: a host that does not respond
    peers = [Peer(0, "me", "127.0.0.1", alive.port), Peer(1, "node1", "127.0.0.1", leaving.port),
             Peer(2, "node2", "127.0.0.1", closed_port()), Peer(3, "node3", "127.0.0.1", silent.getsockname()[1])]
    assert [probe(p, timeout=0.5) for p in peers] == ["alive", "leaving", "gone", "unreachable"]
    assert describe_lost(peers, me=0) == ("rank 2 on node2 (its process ended), "
                                          "rank 3 on node3 (its host does not answer: down or cut off)")
    silent.close()


def test_the_first_verdict_wins_so_later_survivors_do_not_blame_their_neighbours() -> None:
    server = dist.TCPStore("127.0.0.1", 0, 1, True, timeout=datetime.timedelta(seconds=5), wait_for_workers=False)
    store = dist.PrefixStore("attempt/", server)
    assert first_verdict(store, None) is None
    assert first_verdict(store, "rank 2 on node2 (its process ended)") == "rank 2 on node2 (its process ended)"
    late = "rank 1 on node1 (its process ended), rank 2 on node2 (its process ended)"
    assert first_verdict(store, late) == "rank 2 on node2 (its process ended)"
    assert first_verdict(None, late) == late  # no store: this rank's own probes


def test_peer_failure_line_is_one_line_naming_this_rank_and_the_cause() -> None:
    line = peer_failure_line(RuntimeError("[pair.cc:537] Read error [10.0.0.3]:1224: Connection reset by peer"),
                             rank=1, world_size=4)
    assert "\n" not in line and line.startswith(f"dtrain: [rank 1/4 on {socket.gethostname()}] stopping: ")
    assert "Connection reset by peer" in line and "resumes from the newest checkpoint" in line
