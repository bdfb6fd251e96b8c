"""Simulated hosts on one machine: a network namespace, an address and a hostname each.

Every host is a network namespace joined to one bridge by a veth pair, with an address in a
private /24 that exists only inside these namespaces, its own hostname (each process is started
under `unshare --uts`) and an /etc/hosts of the cluster's names (`ip netns exec` mounts
/etc/netns/NAME/hosts over /etc/hosts). The file system is shared, as NFS would be.

Faults are what an operator sees on real hosts: every process of a host SIGKILLed (a crash),
its link down (a partition), a token-bucket limit on its link (a slow network; the kernel here
has no netem, so no delay or loss emulation).

Nothing outlives the lab: `Cluster` tears down processes, namespaces, links and host files on
exit, on Ctrl-C and on SIGTERM, and a new lab first removes what a crashed lab (SIGKILL) left:
every object's name carries the PID of the lab that made it, and a dead PID's objects are swept.
Written by hand because no packaged tool does this without a container runtime (mininet needs
Open vSwitch; docker is not on these machines).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "dtl"  # every namespace, bridge and veth of a lab: dtl<pid>...
NETNS_ETC = Path("/etc/netns")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def namespaces_available() -> str | None:
    """None when this process can make network namespaces, else why not (one line)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "tc"):
        if shutil.which(tool) is None:
            return f"the {tool} command is missing"
    probe = f"{PREFIX}{os.getpid()}probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip() or made.returncode}"
    _ip("netns", "del", probe, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(alive=_pid_alive) -> list[str]:
    """Remove the namespaces, bridges and host files of labs whose process is gone; their names."""
    removed = []
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    for name in (line.split()[0] for line in listed if line.strip()):
        match = re.match(rf"{PREFIX}(\d+)", name)
        if match and not alive(int(match.group(1))):
            _remove_namespace(name)
            removed.append(name)
    links = _ip("-o", "link", "show", check=False).stdout
    for name in re.findall(rf"^\d+: ({PREFIX}\d+[a-z0-9]*)[@:]", links, flags=re.M):
        match = re.match(rf"{PREFIX}(\d+)", name)
        if match and not alive(int(match.group(1))):
            _ip("link", "del", name, check=False)
            removed.append(name)
    return removed


def _kill_all_in(namespace: str) -> None:
    """SIGKILL every process in `namespace` until none is left (children may be forking)."""
    for _ in range(50):
        pids = [int(p) for p in _ip("netns", "pids", namespace, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _remove_namespace(namespace: str) -> None:
    _kill_all_in(namespace)
    _ip("netns", "del", namespace, check=False)
    shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)


@dataclass
class Host:
    name: str
    address: str
    namespace: str
    veth: str  # the bridge-side end; down = partition, tbf here shapes traffic to the host
    aliases: tuple[str, ...] = ()

    def pids(self) -> list[int]:
        return [int(p) for p in _ip("netns", "pids", self.namespace, check=False).stdout.split()]


@dataclass
class Cluster:
    """`hosts` names (node0, node1, ..., mlflow); aliases maps a host to extra names in /etc/hosts."""

    names: list[str]
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict, init=False)
    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}", init=False)

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    def subnet_prefix(self) -> str:
        # One /24 per lab PID, in 10.231.0.0/16: two labs on one machine do not share addresses.
        return f"10.231.{os.getpid() % 251}"

    def __enter__(self) -> Cluster:
        sweep_stale()
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    def _build(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "up")
        prefix = self.subnet_prefix()
        for index, name in enumerate(self.names):
            host = Host(name, f"{prefix}.{index + 1}", f"{self.tag}-{name}", f"{self.tag}h{index}",
                        self.aliases.get(name, ()))
            _ip("netns", "add", host.namespace)
            _ip("link", "add", host.veth, "type", "veth", "peer", "name", f"{self.tag}p{index}")
            _ip("link", "set", f"{self.tag}p{index}", "netns", host.namespace)
            _ip("link", "set", host.veth, "master", self.bridge)
            _ip("link", "set", host.veth, "up")
            inside = ("netns", "exec", host.namespace, "ip")
            _ip(*inside, "link", "set", f"{self.tag}p{index}", "name", "eth0")
            _ip(*inside, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip(*inside, "link", "set", "eth0", "up")
            _ip(*inside, "link", "set", "lo", "up")
            self.hosts[name] = host
        hosts_file = "127.0.0.1 localhost\n" + "".join(
            f"{h.address} {' '.join((h.name, *h.aliases))}\n" for h in self.hosts.values())
        for host in self.hosts.values():
            etc = NETNS_ETC / host.namespace
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)
            (etc / "hostname").write_text(host.name + "\n")

    def teardown(self) -> None:
        for host in list(self.hosts.values()):
            _remove_namespace(host.namespace)
            _ip("link", "del", host.veth, check=False)
        _ip("link", "del", self.bridge, check=False)
        self.hosts.clear()

    def command(self, host: str, argv: list[str]) -> list[str]:
        """`argv` as a process of `host`: in its namespace, under its own hostname."""
        namespace = self.hosts[host].namespace
        return ["ip", "netns", "exec", namespace, "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', host, *argv]

    def crash(self, host: str) -> None:
        """Every process of `host` SIGKILLed at once, as a power loss or a kernel panic would."""
        _kill_all_in(self.hosts[host].namespace)

    def set_link(self, host: str, up: bool) -> None:
        _ip("link", "set", self.hosts[host].veth, "up" if up else "down")

    def limit_bandwidth(self, host: str, mbit: int | None) -> None:
        """Both directions of `host`'s link at `mbit` Mbit/s with a token bucket; None removes it."""
        found = self.hosts[host]
        for prefix, device in (([], found.veth), (["ip", "netns", "exec", found.namespace], "eth0")):
            subprocess.run([*prefix, "tc", "qdisc", "del", "dev", device, "root"], capture_output=True, check=False)
            if mbit is not None:
                # burst >= rate / HZ, or the bucket cannot pass full-size packets at high rates.
                burst = max(32, mbit * 1000 // 8 // 250)
                subprocess.run([*prefix, "tc", "qdisc", "add", "dev", device, "root", "tbf", "rate", f"{mbit}mbit",
                                "burst", f"{burst}kb", "latency", "400ms"], check=True, capture_output=True)
