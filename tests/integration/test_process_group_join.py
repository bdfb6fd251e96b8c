"""A restarted worker group must never read an earlier attempt's keys, and must fail fast when a
peer does not come: the two causes of the torchrun restart hang (dtrain/distributed/process_group.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
import torch.distributed as dist
from processes import CHECKOUT_PYTHONPATH, free_port

from dtrain.distributed.process_group import JoinTimeout, agree_on_namespace


def _attempt(store: dist.Store, world_size: int, seconds: float = 20.0) -> list[str]:
    """Every rank of one attempt runs the handshake in a thread; their namespaces."""
    found: list[str | BaseException] = [""] * world_size

    def rank(r: int) -> None:
        try:
            found[r] = agree_on_namespace(store, r, world_size, time.monotonic() + seconds)
        except BaseException as exc:  # noqa: BLE001
            found[r] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for value in found:
        if isinstance(value, BaseException):
            raise value
    return found  # type: ignore[return-value]


def test_each_attempt_gets_a_namespace_of_its_own_despite_stale_keys() -> None:
    store = dist.HashStore()  # like the agent's store, it outlives the attempts
    first = _attempt(store, 3)
    assert len(set(first)) == 1
    # A dead attempt left its hello keys (and answers) behind; the next attempt must not be fooled.
    second = _attempt(store, 3)
    assert len(set(second)) == 1 and second[0] != first[0]


def test_a_missing_peer_fails_fast_with_one_line() -> None:
    store = dist.HashStore()
    store.set_timeout(timedelta(seconds=30))
    started = time.monotonic()
    with pytest.raises(JoinTimeout, match=r"rank\(s\) 1 did not join"):
        agree_on_namespace(store, 0, 2, time.monotonic() + 1.0)  # rank 1 never comes
    with pytest.raises(JoinTimeout, match="no answer"):
        agree_on_namespace(store, 1, 2, time.monotonic() + 1.0)  # rank 0 never comes
    assert time.monotonic() - started < 10


def test_the_formed_group_gets_the_long_collective_timeout() -> None:
    script = ("import torch, torch.distributed as dist\n"
              "from dtrain.distributed.process_group import form_process_group\n"
              "form_process_group('gloo', 0, 1, torch.device('cpu'), join_seconds=5, collective_minutes=30)\n"
              "print(dist.distributed_c10d._get_default_group()._get_backend(torch.device('cpu')).options._timeout)\n")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "PYTHONPATH": CHECKOUT_PYTHONPATH}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "0:30:00"  # joining had 5 s; collectives get distributed.timeout_minutes
