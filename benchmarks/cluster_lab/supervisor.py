"""One host's supervisor: reruns its launcher after it ends in failure, as kubelet would.

kubelet with `restartPolicy: OnFailure` (the PyTorchJob and the indexed Job of launch/helm), or a
Slurm requeue, starts a host's launcher again after it exits non-zero; a crashed host comes back
after its reboot. This thread does the same for one simulated host, and records every start and
end so the lab can say how the job got through a fault.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster_lab.hosts import Cluster
from dtrain.distributed.failure import EXIT_USER_ERROR  # a configuration error: kubelet would retry, we stop


@dataclass
class Invocation:
    started: float
    ended: float | None = None
    exit_code: int | None = None


@dataclass
class Supervisor:
    cluster: Cluster
    host: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    restart_delay: float = 2.0
    max_restarts: int = 6
    invocations: list[Invocation] = field(default_factory=list)
    _down_until: float = 0.0
    _held: bool = False
    _stopped: bool = False
    _process: subprocess.Popen | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"supervisor-{self.host}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped:
            with open(self.log, "a") as log:
                log.write(f"=== lab: launcher start {len(self.invocations) + 1} at {time.time():.3f}\n")
                log.flush()
                self._process = subprocess.Popen(self.cluster.command(self.host, self.argv), env=self.env,
                                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                run = Invocation(started=time.time())
                self.invocations.append(run)
                run.exit_code = self._process.wait()
                run.ended = time.time()
                log.write(f"=== lab: launcher exit {run.exit_code} at {run.ended:.3f}\n")
            if run.exit_code in (0, EXIT_USER_ERROR) or len(self.invocations) > self.max_restarts:
                return
            while not self._stopped and (self._held or time.time() < self._down_until):
                time.sleep(0.2)  # the host is down: nothing restarts it yet
            time.sleep(0 if self._stopped else self.restart_delay)

    def crash(self, down_seconds: float) -> float:
        """Every process of the host killed; the supervisor reruns it `down_seconds` later."""
        self._down_until = time.time() + down_seconds
        self.cluster.crash(self.host)
        return time.time()

    def hold(self) -> None:
        """The host never comes back: no restart until release()."""
        self._held = True

    def release(self) -> None:
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, deadline: float) -> bool:
        """True when the supervisor finished before `deadline` (time.time()); a held host whose
        launcher has ended counts as finished (it will not come back)."""
        while self.running() and not self._idle_held() and time.time() < deadline:
            time.sleep(0.2)
        return not self.running() or self._idle_held()

    def _idle_held(self) -> bool:
        return self._held and (self._process is None or self._process.poll() is not None)

    def stop(self) -> None:
        self._stopped = True
        self.cluster.crash(self.host)
        if self._thread is not None:
            self._thread.join(30)

    @property
    def final_exit(self) -> int | None:
        return self.invocations[-1].exit_code if self.invocations else None
