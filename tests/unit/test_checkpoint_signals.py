"""Preemption: a signal only sets a flag; the loop sees it at the next step boundary."""

from __future__ import annotations

import os
import signal

from dtrain.checkpoint import PreemptionHandler


def test_sigterm_and_sigusr1_set_the_flag_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        with PreemptionHandler() as handler:
            assert not handler.requested and not handler.any_rank_requested()
            os.kill(os.getpid(), signum)  # delivered before kill() returns to Python code
            assert handler.requested and handler.any_rank_requested()
            assert handler.signal_name == signal.Signals(signum).name
    assert signal.getsignal(signal.SIGTERM) is before


def test_first_signal_is_remembered() -> None:
    with PreemptionHandler() as handler:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert handler.signal_name == "SIGUSR1"
