"""die_with_parent (PR_SET_PDEATHSIG): a child that asked for it dies when its parent is SIGKILLed,
which no atexit hook can arrange (a SIGKILLed parent runs none). A second child that did not
ask is the control: it survives the same kill, so the test can tell the mechanism from luck."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
from processes import alive, checkout_env

CHILD = """
import os, sys, time
from dtrain.distributed.lifetime import die_with_parent
if sys.argv[1] == "die" and not die_with_parent():
    sys.exit("die_with_parent() is not available here")
print(os.getpid(), flush=True)
time.sleep(120)
"""

PARENT = """
import subprocess, sys, time
children = [subprocess.Popen([sys.executable, "-c", sys.argv[1], kind], stdout=subprocess.PIPE, text=True)
            for kind in ("die", "stay")]
print(" ".join(child.stdout.readline().strip() for child in children), flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_dies_with_its_sigkilled_parent_and_one_without_it_does_not() -> None:
    env = checkout_env()
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD], env=env, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        dies, stays = (int(pid) for pid in parent.stdout.readline().split())
        assert alive(dies) and alive(stays)
        os.kill(parent.pid, signal.SIGKILL)  # no cleanup of its own can run
        parent.wait()
        deadline = time.monotonic() + 5
        while alive(dies) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(dies), "the child that asked to die with its parent outlived it"
        assert alive(stays)  # the control: without die_with_parent an orphan lives on
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)  # the control child (same process group)
