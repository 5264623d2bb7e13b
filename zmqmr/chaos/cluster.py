"""A cluster of real processes for the chaos harness: a master and N workers.

Each node is ``python -m zmqmr master|worker`` in its own process group (a
new session), so one signal reaches a worker and every executor it started.
Each has its own data directory and log, and each can be killed, paused,
resumed and restarted by name (``"master"``, ``"w0"``, ``"w1"``, ...). A
restarted node gets the same addresses, data directory and namespace. With
``netns=True`` (root only) every worker runs in its own network namespace
(see ``zmqmr.chaos.netns``) and the master listens for workers on the bridge, so a
worker can be cut off the network; clients always connect over loopback.

Processes are started with ``--die-with-parent`` (they die if the harness
dies; Linux delivers that when the *thread* that started them exits, so start
and restart nodes from one long-lived thread). Signals go to a process group
only while its leader is alive and unreaped, so a recycled pid is never hit.
``close`` kills every process that carries this cluster's mark in its
environment (executors included), removes the namespaces and, unless kept,
the directory.

Imports zmqmr's public API only.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

import psutil

import zmqmr

from ..journal import read_entries
from . import agent, netns
from .lab import parse_log
from .netns import Network

log = logging.getLogger(__name__)

#: The directory that holds the zmqmr package: child processes import this zmqmr.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(zmqmr.__file__)))

#: Cluster settings that make faults show quickly (seconds); backups for tasks of
#: half a second, so that stragglers (the slow nemesis) get them.
FAST_MASTER: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "worker_timeout": 1.5,
    "speculation_min_seconds": 0.5,
}
FAST_WORKER: dict[str, Any] = {
    "fetch_timeout": 0.5,
    "fetch_retries": 2,
    "reconnect_initial": 0.2,
    "reconnect_max": 1.0,
}
#: The environment variable that tells a process which chaos node it is.
NODE_ENV = "ZMQMR_CHAOS_NODE"
#: The environment variable that tells a process which cluster it belongs to.
CLUSTER_ENV = "ZMQMR_CHAOS_CLUSTER"


@functools.lru_cache(maxsize=4)
def zmqmr_help(command: str) -> str:
    """``zmqmr COMMAND --help``, to learn which flags this zmqmr has (e.g. ``--insecure``)."""
    proc = subprocess.run(
        [sys.executable, "-m", "zmqmr", command, "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    return proc.stdout


def _env(node: str | None = None, cluster: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = ROOT + (os.pathsep + path if path else "")
    if node is not None:
        env[NODE_ENV] = node
    if cluster is not None:
        env[CLUSTER_ENV] = cluster
    return env


def marked(cluster: str) -> list[psutil.Process]:
    """Every live process whose environment says it belongs to ``cluster``."""
    found = []
    for proc in psutil.process_iter(["status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if proc.environ().get(CLUSTER_ENV) == cluster:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _settings_args(values: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in values.items():
        out += ["--set", f"{name}={value}"]
    return out


class Node:
    """One process of the cluster, known by name; restartable."""

    def __init__(
        self, name: str, args: list[str], log_path: str, prefix: list[str], cluster: str
    ) -> None:
        self.name = name
        self.cluster = cluster
        self.args = args
        self.prefix = prefix
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.paused = False
        self._log: IO[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        self.starts += 1
        self._log.write(f"--- chaos: start #{self.starts} of {self.name} ---\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "zmqmr", *self.args, "--die-with-parent"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=_env(self.name, self.cluster),
            start_new_session=True,
        )
        self.paused = False
        return self.proc

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the node's process group; False if its leader is gone."""
        # poll() reaps only in this thread: while it says "running", the leader's
        # pid, which is the group's id, cannot have been recycled.
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        if sig == signal.SIGSTOP:
            self.paused = True
        elif sig == signal.SIGCONT:
            self.paused = False
        return True

    def kill(self) -> bool:
        """SIGKILL the process group (the node and its executors) and reap the node."""
        if self.proc is None:
            return False
        was_alive = self.proc.poll() is None
        self.signal(signal.SIGKILL)
        self.proc.wait()
        self.paused = False
        return was_alive

    def close(self) -> None:
        self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class ChaosCluster:
    """A master and ``workers`` workers as separate processes; a context manager.

    ``settings`` go to the master (``ClusterSettings`` fields), ``worker_settings``
    to every worker (``WorkerSettings`` fields); both default to fast timeouts.
    """

    def __init__(
        self,
        workers: int = 4,
        *,
        netns: bool = False,
        slots: int = 1,
        settings: dict[str, Any] | None = None,
        worker_settings: dict[str, Any] | None = None,
        directory: str | None = None,
        keep: bool = False,
        client_timeout: float = 5.0,
        startup_timeout: float = 60.0,
        state_dir: bool = False,
    ) -> None:
        if workers < 1:
            raise ValueError("a chaos cluster needs at least one worker")
        self.num_workers = workers
        self.use_netns = netns
        self.slots = slots
        self.settings = {**FAST_MASTER, **(settings or {})}
        self.worker_settings = {**FAST_WORKER, **(worker_settings or {})}
        self.worker_settings["slots"] = slots
        self._directory = directory
        self.keep = keep
        self.client_timeout = client_timeout
        self.startup_timeout = startup_timeout
        #: With a journal (--state-dir in the cluster's directory), a restarted master resumes.
        self.journaled = state_dir
        self.dir = ""
        self.network: Network | None = None
        self.nodes: dict[str, Node] = {}
        self.address = ""  # the master's client address
        self.worker_address = ""  # the master's worker address
        # In network namespaces the master and the shuffle servers bind beyond loopback:
        # that takes --insecure (the chaos network is ours alone), and then clients too.
        self.insecure = False

    # -- names -------------------------------------------------------------------

    @property
    def worker_names(self) -> list[str]:
        return [f"w{i}" for i in range(self.num_workers)]

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r}; nodes: {', '.join(self.nodes)}") from None

    @property
    def state_dir(self) -> str:
        """The master's state directory (used with ``state_dir=True``)."""
        return os.path.join(self.dir, "master-state")

    def journal(self) -> dict[str, Any]:
        """What the master's journal holds (read while the master is dead): map attempts
        assigned and distinct maps done, summed over its jobs, and its size in bytes."""
        path = os.path.join(self.state_dir, "journal")
        try:
            entries, size = read_entries(path)
        except OSError:
            return {"map_attempts": 0, "maps_done": 0, "bytes": 0}
        attempts = sum(1 for e in entries if e.kind == "attempt" and e.fields["kind"] == "map")
        attempts += sum(int(e.fields["map"]) for e in entries if e.kind == "attempts")
        done: set[tuple[str, int]] = set()
        for e in entries:
            key = (e.fields.get("job", ""), e.fields.get("task", -1))
            if e.kind == "map":
                done.add(key)
            elif e.kind == "lost":
                done.discard(key)
        return {"map_attempts": attempts, "maps_done": len(done), "bytes": size}

    def data_dir(self, name: str) -> str:
        return os.path.join(self.dir, name, "data")

    @property
    def worker_timeout(self) -> float:
        return float(self.settings["worker_timeout"])

    def host(self, name: str) -> str:
        """The machine a node runs on (all of them: this one)."""
        self.node(name)
        return socket.gethostname()

    def pid(self, name: str) -> int | None:
        return self.node(name).pid

    def node_name(self, name: str) -> str:
        """The host name the master gives a worker's machine."""
        return socket.gethostname()

    #: The master is ours: it can be killed.
    master_known = True
    #: What ``close`` could not restore (nothing: it tears everything down).
    restored: list[str] = []

    # -- start ---------------------------------------------------------------------

    def start(self) -> ChaosCluster:
        if self._directory:
            os.makedirs(self._directory, exist_ok=True)
            self.dir = tempfile.mkdtemp(prefix="cluster-", dir=self._directory)
        else:
            self.dir = tempfile.mkdtemp(prefix="zmqmr-chaos-")
        try:
            bind_host = "127.0.0.1"
            if self.use_netns:
                ok, why = netns.available()
                if not ok:
                    raise zmqmr.ClusterError(why)
                self.network = netns.Network(self.num_workers)
                self.network.create()
                bind_host = self.network.host_address
                self.insecure = "--insecure" in zmqmr_help("master")
            self._start_master(bind_host)
            for i, name in enumerate(self.worker_names):
                os.makedirs(os.path.join(self.dir, name), exist_ok=True)
                prefix = self.network.exec_prefix(i) if self.network else []
                args = [
                    "worker",
                    "--master",
                    self.worker_address,
                    "--data-dir",
                    self.data_dir(name),
                    *_settings_args(self.worker_settings),
                ]
                if self.insecure:
                    args.append("--insecure")
                node = Node(name, args, os.path.join(self.dir, f"{name}.log"), prefix, self.dir)
                self.nodes[name] = node
                node.start()
            self.wait_for_workers(self.num_workers, self.startup_timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _start_master(self, bind_host: str) -> None:
        announce = os.path.join(self.dir, "master.json")
        args = [
            "master",
            "--bind",
            f"tcp://{bind_host}:*",
            "--client-bind",
            "tcp://127.0.0.1:*",
            "--announce",
            announce,
            *_settings_args(self.settings),
        ]
        if self.journaled:
            args += ["--state-dir", self.state_dir]
        if "--http" in zmqmr_help("master"):  # no dashboard: many clusters share a machine
            args += ["--http", "off"]
        if self.insecure:
            args.append("--insecure")
        node = Node("master", args, os.path.join(self.dir, "master.log"), [], self.dir)
        self.nodes["master"] = node
        proc = node.start()
        deadline = time.monotonic() + self.startup_timeout
        while not os.path.exists(announce):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise zmqmr.ClusterError(f"the master did not start:\n{node.log()}")
            time.sleep(0.02)
        with open(announce) as f:
            addresses = json.load(f)
        self.address = addresses["client_address"]
        self.worker_address = addresses["worker_address"]
        # A restarted master must come back at the same addresses.
        i = args.index("--bind")
        args[i + 1] = self.worker_address
        args[args.index("--client-bind") + 1] = self.address
        del args[args.index("--announce") : args.index("--announce") + 2]

    def client(
        self, timeout: float | None = None, master_wait: float | None = None
    ) -> zmqmr.Client:
        """A new client of the master; the caller closes it."""
        return zmqmr.Client(
            self.address,
            timeout=timeout or self.client_timeout,
            insecure=self.insecure,
            master_wait=master_wait,
        )

    def status(self) -> dict[str, Any]:
        with self.client() as c:
            return c.status()

    def wait_for_workers(self, n: int, timeout: float = 30.0) -> None:
        """Block until the master knows ``n`` live workers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if len(self.status()["workers"]) >= n:
                    return
            except zmqmr.MasterUnavailable:
                pass
            if time.monotonic() > deadline:
                logs = "\n".join(f"== {n.name}\n{n.log()[-2000:]}" for n in self.nodes.values())
                raise zmqmr.ClusterError(f"fewer than {n} workers registered in {timeout}s\n{logs}")
            time.sleep(0.05)

    # -- faults --------------------------------------------------------------------

    def kill(self, name: str) -> bool:
        """SIGKILL a node and its executors; True if it was running."""
        return self.node(name).kill()

    def restart(self, name: str) -> int:
        """Start a node again (killing what is left of it first); returns the new pid."""
        node = self.node(name)
        if node.alive:
            node.kill()
        return node.start().pid

    def pause(self, name: str) -> bool:
        return self.node(name).signal(signal.SIGSTOP)

    def resume(self, name: str) -> bool:
        return self.node(name).signal(signal.SIGCONT)

    def map_outputs(self, name: str, job_id: str | None) -> list[str]:
        """A worker's finished map output files, of ``job_id`` if given."""
        return agent.map_outputs(self.data_dir(name), job_id)

    def damage(self, name: str, path: str, mode: str, where: float, pick: float) -> Any:
        return agent.damage(path, mode, where, pick)

    def master_log(self) -> list[tuple[float, str]]:
        """The master's log lines, with their Unix time."""
        node = self.nodes.get("master")
        return parse_log(node.log()) if node is not None else []

    def link(self, name: str, up: bool) -> None:
        """Take a worker's network link down or bring it up (needs ``netns=True``)."""
        if self.network is None:
            raise zmqmr.ClusterError("cutting a worker off needs the cluster in network namespaces")
        self.network.link(self.worker_names.index(name), up)

    def heal(self) -> None:
        """Undo every lasting fault that can be undone: links up, paused nodes resumed."""
        if self.network is not None:
            for i in range(self.num_workers):
                self.network.link(i, True)
        for node in self.nodes.values():
            if node.alive:
                node.signal(signal.SIGCONT)

    # -- shutdown --------------------------------------------------------------------

    def logs(self) -> dict[str, str]:
        return {name: node.log() for name, node in self.nodes.items()}

    def close(self) -> None:
        # Workers first, so none of them reconnects to a master being torn down.
        for node in [n for name, n in self.nodes.items() if name != "master"]:
            node.close()
        if "master" in self.nodes:
            self.nodes["master"].close()
        if self.dir:
            # Executors of killed workers die with them (PR_SET_PDEATHSIG); this
            # catches any that did not, by the mark in their environment.
            deadline = time.monotonic() + 10
            while (left := marked(self.dir)) and time.monotonic() < deadline:
                for proc in left:
                    try:
                        proc.resume()
                        proc.kill()
                    except psutil.Error:
                        pass
                psutil.wait_procs(left, timeout=1)
        if self.network is not None:
            self.network.destroy()
        if self.dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ChaosCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
