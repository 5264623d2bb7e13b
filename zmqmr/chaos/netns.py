"""Network namespaces for chaos workers: one per worker, joined by a bridge.

Layout for a cluster of N workers (as root, with ``ip`` from iproute2)::

    host:  bridge zc<pid>-<n>b  10.A.B.1/24   <- the master binds here
             ├── veth zc<pid>-<n>w0 ── eth0 10.A.B.2/24 in netns zmqmr-chaos-<pid>-<n>-w0
             ├── veth zc<pid>-<n>w1 ── eth0 10.A.B.3/24 in netns zmqmr-chaos-<pid>-<n>-w1
             ...

Workers reach the master and each other's shuffle servers through the bridge
(layer 2, so the host needs no forwarding or firewall change). Taking a
worker's host-side veth down cuts it off from everything; bringing it up
reconnects it. Every name carries the creating process's pid, so
``cleanup_stale`` can remove what a crashed run left without touching
anybody else's namespaces. Only 10.0.0.0/8 addresses are used, and only in
namespaces made here.

Imports: the standard library only.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import re
import shutil
import subprocess

log = logging.getLogger(__name__)

_counter = itertools.count()
NETNS_RE = re.compile(r"^zmqmr-chaos-(\d+)-(\d+)-w\d+$")
LINK_RE = re.compile(r"^zc([0-9a-f]+)-([0-9a-f]+)(b|w\d+)$")


def available() -> tuple[bool, str]:
    """Whether namespaces can be made here, and if not, why."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        uid = os.geteuid() if hasattr(os, "geteuid") else "?"
        return False, f"network namespaces need root (running as uid {uid})"
    if shutil.which("ip") is None:
        return False, "network namespaces need the ip command (iproute2)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return False, f"`ip netns` does not work here: {probe.stderr.strip()}"
    return True, ""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def _subnets_in_use() -> set[str]:
    out = _ip("-4", "-o", "addr", "show", check=False).stdout
    out += _ip("-4", "route", "show", check=False).stdout
    return set(re.findall(r"\b(10\.\d+\.\d+)\.\d+", out))


class Network:
    """A bridge and one namespace per worker; ``destroy`` removes all of it."""

    def __init__(self, workers: int) -> None:
        if workers > 250:
            raise ValueError("at most 250 workers fit in one /24")
        pid, n = os.getpid(), next(_counter)
        self.workers = workers
        self.tag = f"{pid:x}-{n:x}"
        self.bridge = f"zc{self.tag}b"
        self.netns_names = [f"zmqmr-chaos-{pid}-{n}-w{i}" for i in range(workers)]
        self.veths = [f"zc{self.tag}w{i}" for i in range(workers)]
        rng = random.Random(pid * 1000 + n)
        used = _subnets_in_use()
        for _ in range(1000):
            prefix = f"10.{rng.randrange(100, 250)}.{rng.randrange(1, 255)}"
            if prefix not in used:
                break
        else:  # pragma: no cover - 10.0.0.0/8 is not that busy
            raise OSError("no free /24 in 10.0.0.0/8")
        self.prefix = prefix
        self.host_address = f"{prefix}.1"
        self.created = False

    def address(self, i: int) -> str:
        return f"{self.prefix}.{i + 2}"

    def create(self) -> None:
        cleanup_stale()  # what runs that were killed outright left behind
        self.created = True
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(self.workers):
                ns, veth = self.netns_names[i], self.veths[i]
                _ip("netns", "add", ns)
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", veth, "master", self.bridge, "up")
                _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.destroy()
            raise

    def exec_prefix(self, i: int) -> list[str]:
        """The command prefix that runs a program inside worker ``i``'s namespace."""
        return ["ip", "netns", "exec", self.netns_names[i]]

    def link(self, i: int, up: bool) -> None:
        _ip("link", "set", self.veths[i], "up" if up else "down")

    def destroy(self) -> None:
        if not self.created:
            return
        self.created = False
        # The veth first: deleting a namespace frees its end of the pair only later.
        for veth in self.veths:
            _ip("link", "del", veth, check=False)
        for ns in self.netns_names:
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.bridge, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Remove namespaces and links of chaos runs whose process is gone; returns their names."""
    if not available()[0]:
        return []
    removed = []
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        fields = line.split(":", 2)
        if len(fields) < 2:
            continue
        name = fields[1].strip().split("@", 1)[0]
        m = LINK_RE.match(name)
        if m and not _alive(int(m.group(1), 16)):
            _ip("link", "del", name, check=False)
            removed.append(name)
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NETNS_RE.match(name)
        if m and not _alive(int(m.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed
