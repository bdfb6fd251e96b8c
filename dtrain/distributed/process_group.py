"""Forming the process group so that a restarted group either forms or fails within a minute.

Why a restart used to hang (torch 2.4+, c10d rendezvous): torchrun's agents host one TCPStore
that outlives every restart of the worker group (the "shared agent store", pytorch#128096), and
`init_process_group(init_method="env://")` writes its keys there under the same names at every
attempt (`default_pg/0//cpu/rank_N`: gloo's addresses, NCCL's unique id). A restarted worker that
reads a peer's key before the peer has rewritten it gets the address of a dead process: gloo
fails with "connectFullMesh failed ... Connection refused", or waits for a pair that never
connects until the process-group timeout (30 min). torch once prefixed the keys with
TORCHELASTIC_RESTART_COUNT, but each agent counts restarts on its own (pytorch#108158, #147064:
one agent counts a failure, another a membership change), so ranks disagreed on the prefix;
pytorch#135712 describes exactly this stale-key failure.

The fix here needs nothing from the launcher:
1. Every attempt gets a namespace no earlier attempt used: rank 0 draws a random token and a
   handshake in which each rank proves it is of this attempt (a fresh nonce of its own) hands
   the token to exactly the ranks of this attempt. Stale keys are never read.
2. Joining has its own short deadline (`distributed.init_timeout_seconds`): the store connection,
   the handshake and the first barrier. A rank that cannot join fails with one line and torchrun
   re-rendezvouses, instead of waiting out the long collective timeout, which is set only once
   the group has formed.
"""

from __future__ import annotations

import datetime
import os
import time
import uuid

import torch
import torch.distributed as dist

from dtrain.errors import DtrainError

_POLL_SECONDS = 0.05
_KEY_ROOT = "dtrain/join"


class JoinTimeout(DtrainError):
    """This rank could not form the process group in time (a peer is gone or stale)."""

    exit_code = 1  # a failure torchrun should retry, not a user error


def _connect_store(timeout: datetime.timedelta, rank: int, world_size: int) -> dist.Store:
    """The TCPStore torchrun announced: the agent's own when it shares it, else rank 0 hosts one."""
    try:
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    except (KeyError, ValueError):
        raise DtrainError("WORLD_SIZE is set but MASTER_ADDR/MASTER_PORT are not: launch with torchrun "
                          "(or set both), or unset WORLD_SIZE for one process") from None
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    try:
        return dist.TCPStore(host, port, world_size, is_master=not agent_store and rank == 0,
                             timeout=timeout, wait_for_workers=False, multi_tenant=True)
    except (RuntimeError, dist.DistStoreError) as exc:
        raise JoinTimeout(f"cannot reach the rendezvous store at {host}:{port} ({_first_line(exc)})") from None


def _wait_for(store: dist.Store, key: str, deadline: float) -> bytes:
    while not store.check([key]):
        if time.monotonic() > deadline:
            raise JoinTimeout(f"no answer on {key} before the join deadline")
        time.sleep(_POLL_SECONDS)
    return store.get(key)


def agree_on_namespace(store: dist.Store, rank: int, world_size: int, deadline: float) -> str:
    """A key prefix shared by exactly the ranks of this attempt, never used by an earlier one.

    Rank r>0 publishes a fresh nonce under hello/r and waits for welcome/<nonce>, a key only
    rank 0 of this attempt can write (nobody knew the nonce before). Rank 0 answers every nonce it
    sees (a stale one from a dead attempt is answered too, harmlessly) until each rank has
    confirmed under ready/<token>/r, a key that did not exist before this attempt's token.
    """
    if rank != 0:
        nonce = uuid.uuid4().hex
        store.set(f"{_KEY_ROOT}/hello/{rank}", nonce)
        token = _wait_for(store, f"{_KEY_ROOT}/welcome/{nonce}", deadline).decode()
        store.set(f"{_KEY_ROOT}/ready/{token}/{rank}", "1")
        return f"{_KEY_ROOT}/{token}/"
    token = uuid.uuid4().hex
    answered: set[bytes] = set()
    waiting = set(range(1, world_size))
    while waiting:
        for peer in sorted(waiting):
            hello = f"{_KEY_ROOT}/hello/{peer}"
            if store.check([hello]):
                peer_nonce = store.get(hello)  # the bytes rank `peer` set (as a str) under hello/peer
                if peer_nonce not in answered:
                    store.set(f"{_KEY_ROOT}/welcome/{peer_nonce.decode()}", token)
                    answered.add(peer_nonce)
            if store.check([f"{_KEY_ROOT}/ready/{token}/{peer}"]):
                waiting.discard(peer)
        if waiting and time.monotonic() > deadline:
            raise JoinTimeout(f"rank(s) {', '.join(map(str, sorted(waiting)))} did not join")
        if waiting:
            time.sleep(_POLL_SECONDS)
    return f"{_KEY_ROOT}/{token}/"


def form_process_group(backend: str, rank: int, world_size: int, device: torch.device, *,
                       join_seconds: float, collective_minutes: float) -> None:
    """init_process_group in a fresh namespace, bounded by `join_seconds`; then the long timeout."""
    join = datetime.timedelta(seconds=join_seconds)
    collective = datetime.timedelta(minutes=collective_minutes)
    # torch's way to lengthen a formed group's timeout is private; without it the group gets the
    # long timeout from the start (the handshake above still fails fast).
    set_pg_timeout = getattr(dist.distributed_c10d, "_set_pg_timeout", None)
    deadline = time.monotonic() + join_seconds
    store = _connect_store(join, rank, world_size)
    namespace = agree_on_namespace(store, rank, world_size, deadline)
    try:
        dist.init_process_group(backend=backend, store=dist.PrefixStore(namespace, store), rank=rank,
                                world_size=world_size, timeout=join if set_pg_timeout else collective,
                                device_id=device if device.type == "cuda" else None)
        dist.barrier()  # the group really formed: every pair connected
    except (RuntimeError, dist.DistError) as exc:
        raise JoinTimeout(f"process group did not form within {join_seconds:g} s ({_first_line(exc)})") from None
    store.set_timeout(collective)  # later new_group()s use the store too (DeepSpeed does)
    if set_pg_timeout is not None:
        set_pg_timeout(collective)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
