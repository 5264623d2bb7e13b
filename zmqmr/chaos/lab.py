"""A lab: the workers ``scripts/start-workers.sh`` started on real machines, over ssh.

``LabCluster(hosts_file, master=ADDR, ...)`` is what the runner and the
nemeses use in place of a ``ChaosCluster`` when the run is given
``--hosts``: it starts nothing, it reaches what is running. For every host of
the hosts file (the file given to start-workers.sh: ``HOST [SLOTS]`` lines,
``#`` comments) it starts a ``zmqmr.chaos.agent`` over ``ZMQMR_SSH HOST sh -s``
(the scripts' ssh command; default ``ssh -o BatchMode=yes -o
ConnectTimeout=10``), and one on the master's machine (``master_host``; this
machine by default, without ssh), and talks to each over that one ssh
session. The workers are named ``w0``, ``w1``, ... in the order of the hosts
file; the history records each fault's host.

``close`` restores the lab however the run ended: every worker resumed,
every killed worker (and a killed master) started again with its own command
line, and the master waited for until it lists every worker again. The
agents themselves resume their process groups when their ssh session ends,
so even a harness killed outright leaves nothing stopped.

The ssh processes run in sessions of their own: a Ctrl-C at the terminal
reaches the harness only, which then restores the lab through them.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import queue
import shlex
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import zmqmr
from zmqmr.config import ClusterSettings

from . import agent as agent_module

log = logging.getLogger(__name__)

DEFAULT_SSH = "ssh -o BatchMode=yes -o ConnectTimeout=10"
#: Seconds to wait for an agent's answer (ssh's own connect timeout comes first).
ANSWER_TIMEOUT = 60.0
#: Seconds ``close`` waits for the master to list every worker again.
RESTORE_TIMEOUT = 60.0


def parse_hosts(path: str) -> list[str]:
    """The hosts of a hosts file, in order: ``HOST [SLOTS]`` lines, ``#`` comments."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise zmqmr.ClusterError(f"cannot read the hosts file {path}: {exc.strerror}") from None
    hosts: list[str] = []
    for n, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and not words[1].isdigit()):
            raise zmqmr.ClusterError(f"{path}:{n}: expected 'HOST [SLOTS]', got: {line.strip()}")
        if words[0] not in hosts:
            hosts.append(words[0])
    if not hosts:
        raise zmqmr.ClusterError(f"no hosts in {path}")
    return hosts


def _sh(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def agent_program(run_dir: str, role: str, python: str = "") -> str:
    """The sh program, fed to ``sh -s``, that runs the agent on a lab machine.

    It expands ``RUN_DIR`` as the lab scripts do (empty: ~/.zmqmr) and, without
    ``python``, runs the agent with the Python of the process in the pid file.
    """
    source = inspect.getsource(agent_module)
    return f"""{{
RUN_DIR={_sh(run_dir)}
ROLE={_sh(role)}
PY={_sh(python)}
case $RUN_DIR in
'') RUN_DIR=$HOME/.zmqmr ;;
'~') RUN_DIR=$HOME ;;
'~/'*) RUN_DIR=$HOME/${{RUN_DIR#'~/'}} ;;
esac
node=$(uname -n 2>/dev/null) || node=unknown
if [ -z "$PY" ]; then
    pid=
    [ -r "$RUN_DIR/$ROLE-$node.pid" ] && read -r pid <"$RUN_DIR/$ROLE-$node.pid"
    case $pid in '' | *[!0-9]*) pid= ;; esac
    [ -n "$pid" ] && PY=$(readlink "/proc/$pid/exe" 2>/dev/null)
    [ -n "$PY" ] || PY=python3
fi
exec "$PY" -u -c {_sh(source)} "$RUN_DIR" "$ROLE"
}}
"""


class Remote:
    """One agent, over one ssh session (or ``sh -s`` here); requests from one thread at a time."""

    def __init__(self, host: str, command: list[str], program: str) -> None:
        self.host = host
        self.command = command
        self._lock = threading.Lock()
        self._next = 0
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            start_new_session=True,  # Ctrl-C at the terminal is the harness's to handle
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        threading.Thread(target=self._read, name=f"agent-{host}", daemon=True).start()
        self.proc.stdin.write(program.encode())
        self.proc.stdin.flush()
        self.hello = self._answer(0)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            if line.startswith(agent_module.PREFIX):
                self._lines.put(line[len(agent_module.PREFIX) :])
        self._lines.put(None)

    def stderr(self) -> str:
        self._err.seek(0)
        text = self._err.read().decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip() and "Permanently added" not in ln]
        return lines[-1] if lines else ""

    def _answer(self, rid: int) -> dict[str, Any]:
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise zmqmr.ClusterError(f"{self.host}: the chaos agent did not answer") from None
            if line is None:
                self._lines.put(None)
                rc = self.proc.poll()
                why = self.stderr() or f"exit status {rc}"
                raise zmqmr.ClusterError(f"{self.host}: the chaos agent is gone: {why}")
            answer: dict[str, Any] = json.loads(line)
            if answer.get("id") != rid:
                continue
            if not answer.get("ok"):
                raise zmqmr.ClusterError(f"{self.host}: {answer.get('error')}")
            return answer

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        with self._lock:
            self._next += 1
            rid = self._next
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps({"id": rid, "op": op, **args}) + "\n").encode())
                self.proc.stdin.flush()
            except OSError:
                pass  # the answer says why (the agent is gone)
            return self._answer(rid)

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the agent resumes its group and exits
        except OSError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


def _setting(argv: list[str], name: str) -> str | None:
    """The value of ``--NAME`` or ``--set NAME=`` on a zmqmr command line."""
    flag = "--" + name.replace("_", "-")
    value = None
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
        elif a == "--set" and i + 1 < len(argv) and argv[i + 1].startswith(name + "="):
            value = argv[i + 1].split("=", 1)[1]
    return value


class LabCluster:
    """The lab's workers and master, through agents; the cluster interface of the runner."""

    use_netns = False
    network = None

    def __init__(
        self,
        hosts_file: str,
        *,
        master: str,
        master_host: str = "",
        run_dir: str = "",
        master_run_dir: str | None = None,
        keys: str | None = None,
        insecure: bool = False,
        python: str = "",
        ssh: str | None = None,
        client_timeout: float = 10.0,
        directory: str | None = None,
    ) -> None:
        self.hosts = parse_hosts(hosts_file)
        self.num_workers = len(self.hosts)
        self.address = master
        self.master_host = master_host
        self.run_dir = run_dir
        self.master_run_dir = run_dir if master_run_dir is None else master_run_dir
        self.keys = keys
        self.insecure = insecure
        self.python = python
        self.ssh = shlex.split(ssh if ssh is not None else os.environ.get("ZMQMR_SSH", DEFAULT_SSH))
        if not self.ssh:
            raise zmqmr.ClusterError("ZMQMR_SSH is blank")
        self.client_timeout = client_timeout
        self.dir = directory or ""
        self.agents: dict[str, Remote] = {}
        self.nodes: dict[str, str] = {}  # name -> the machine's node name (uname -n)
        self.pids: dict[str, int] = {}
        self.killed: set[str] = set()  # names killed and not started again
        self.settings: dict[str, Any] = {}
        self.restored: list[str] = []  # what close could not restore
        self.restore_actions: list[str] = []  # what close did to restore the lab
        self._log_offset = 0
        self._clock: dict[str, float] = {}  # name -> the machine's clock minus ours

    @property
    def worker_names(self) -> list[str]:
        return [f"w{i}" for i in range(self.num_workers)]

    def host(self, name: str) -> str:
        if name == "master":
            return self.master_host or "localhost"
        return self.hosts[self.worker_names.index(name)]

    def pid(self, name: str) -> int | None:
        return self.pids.get(name) or None

    def node_name(self, name: str) -> str:
        """The host name the master gives a worker's machine (its ``uname -n``)."""
        return self.nodes.get(name, "")

    @property
    def worker_timeout(self) -> float:
        return float(self.settings.get("worker_timeout", ClusterSettings().worker_timeout))

    # -- start -----------------------------------------------------------------------

    def _command(self, host: str) -> list[str]:
        return [*self.ssh, host, "sh -s"] if host else ["sh", "-s"]

    def _connect(self, name: str) -> Remote:
        if name == "master":
            host, role, run_dir = self.master_host, "master", self.master_run_dir
        else:
            host, role, run_dir = self.host(name), "worker", self.run_dir
        t0 = time.time()
        remote = Remote(host or "localhost", self._command(host), agent_program(run_dir, role))
        self._clock[name] = remote.hello["time"] - (t0 + time.time()) / 2
        return remote

    def start(self) -> LabCluster:
        names = [*self.worker_names, "master"]
        with ThreadPoolExecutor(max_workers=min(32, len(names))) as pool:
            futures = {n: pool.submit(self._connect, n) for n in names}
        problems = []
        for name, fut in futures.items():
            try:
                self.agents[name] = fut.result()
            except zmqmr.ClusterError as exc:
                if name != "master":
                    problems.append(str(exc))
        for name in self.worker_names:
            a = self.agents.get(name)
            if a is None:
                continue
            self.nodes[name] = a.hello["node"]
            self.pids[name] = a.hello["pid"]
            if not a.hello["pid"]:
                problems.append(
                    f"{self.host(name)}: no worker runs there (no live pid in "
                    f"{a.hello['pidfile']}; start it with scripts/start-workers.sh and give "
                    "the same --run-dir)"
                )
        if problems:
            self.close()
            raise zmqmr.ClusterError("the lab is not ready:\n  " + "\n  ".join(problems))
        m = self.agents.get("master")
        if m is not None and m.hello["pid"]:
            self.pids["master"] = m.hello["pid"]
            argv = m.hello["argv"]
            for name in ("worker_timeout", "heartbeat_interval"):
                value = _setting(argv, name)
                if value is not None:
                    self.settings[name] = float(value)
            self._log_offset = m.call("log", offset=0, limit=0)["offset"]
        self.wait_for_workers(self.num_workers, RESTORE_TIMEOUT)
        return self

    @property
    def master_known(self) -> bool:
        """Whether the master's process was found (kill-master and its log need it)."""
        return bool(self.pids.get("master"))

    @property
    def journaled(self) -> bool:
        """Whether the master keeps its jobs across a restart (it runs with --state-dir)."""
        m = self.agents.get("master")
        return m is not None and _setting(m.hello["argv"], "state_dir") is not None

    def journal(self) -> dict[str, Any]:
        """What the master's journal holds: not read in a lab (it is on the master's machine)."""
        return {}

    def client(
        self, timeout: float | None = None, master_wait: float | None = None
    ) -> zmqmr.Client:
        return zmqmr.Client(
            self.address,
            keys=self.keys,
            timeout=timeout or self.client_timeout,
            insecure=self.insecure,
            master_wait=master_wait,
        )

    def status(self) -> dict[str, Any]:
        with self.client() as c:
            return c.status()

    def _listed(self) -> set[str]:
        """The names whose current worker process the master lists."""
        workers = self.status()["workers"]
        seen = {(w["host"], w["pid"]) for w in workers}
        return {n for n in self.worker_names if (self.nodes.get(n), self.pids.get(n)) in seen}

    def wait_for_workers(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        listed: set[str] = set()
        while True:
            try:
                listed = self._listed()
                if len(listed) >= n:
                    return
            except zmqmr.MasterUnavailable:
                pass
            if time.monotonic() > deadline:
                missing = [self.host(x) for x in self.worker_names if x not in listed]
                raise zmqmr.ClusterError(
                    f"the master at {self.address} does not list the workers of "
                    f"{', '.join(missing)} after {timeout:g}s"
                )
            time.sleep(0.2)

    # -- faults ------------------------------------------------------------------------

    def _agent(self, name: str) -> Remote:
        try:
            return self.agents[name]
        except KeyError:
            raise KeyError(f"no node {name!r}; nodes: {', '.join(self.agents)}") from None

    def kill(self, name: str) -> bool:
        answer = self._agent(name).call("kill")
        self.killed.add(name)
        return bool(answer["was_running"])

    def restart(self, name: str) -> int:
        pid = int(self._agent(name).call("restart")["pid"])
        self.pids[name] = pid
        self.killed.discard(name)
        return pid

    def pause(self, name: str) -> bool:
        return bool(self._agent(name).call("stop")["signalled"])

    def resume(self, name: str) -> bool:
        return bool(self._agent(name).call("cont")["signalled"])

    def map_outputs(self, name: str, job_id: str | None) -> list[str]:
        return list(self._agent(name).call("outputs", job=job_id)["files"])

    def damage(self, name: str, path: str, mode: str, where: float, pick: float) -> Any:
        return self._agent(name).call("damage", path=path, mode=mode, where=where, pick=pick)[
            "done"
        ]

    def link(self, name: str, up: bool) -> None:
        raise zmqmr.ClusterError("cutting a lab machine off the network is not supported")

    def heal(self) -> None:
        for name in self.worker_names:
            if name in self.agents:
                try:
                    self.resume(name)
                except zmqmr.ClusterError as exc:
                    log.warning("%s", exc)

    # -- the master's log -------------------------------------------------------------

    def master_log(self) -> list[tuple[float, str]]:
        """The master's log lines since the run started, with the time on our clock."""
        m = self.agents.get("master")
        if m is None or not self.master_known:
            return []
        try:
            text = m.call("log", offset=self._log_offset)["text"]
        except zmqmr.ClusterError:
            return []
        return parse_log(text, self._clock.get("master", 0.0))

    # -- shutdown ----------------------------------------------------------------------

    def close(self) -> None:
        """Restore the lab: resume everything, start again what was killed, wait for it."""
        if not self.agents:
            return
        problems: list[str] = []
        names = [n for n in ("master", *self.worker_names) if n in self.agents]
        for name in names:
            try:
                if self._agent(name).call("cont")["signalled"]:
                    self.restore_actions.append(f"{name} on {self.host(name)}: SIGCONT")
                if name in self.killed or (
                    self.pids.get(name) and not self._agent(name).call("status")["running"]
                ):
                    pid = self.restart(name)
                    self.restore_actions.append(
                        f"{name} on {self.host(name)}: started again (pid {pid})"
                    )
            except zmqmr.ClusterError as exc:
                problems.append(str(exc))
        reached = [n for n in self.worker_names if n in self.agents and self.pids.get(n)]
        if reached and not problems:
            try:
                self.wait_for_workers(len(reached), RESTORE_TIMEOUT)
            except zmqmr.ClusterError as exc:
                problems.append(str(exc))
        for name in names:
            try:
                st = self._agent(name).call("status")
                if st["stopped"]:
                    problems.append(f"{self.host(name)}: pids {st['stopped']} are still stopped")
            except zmqmr.ClusterError as exc:
                problems.append(str(exc))
        for remote in self.agents.values():
            remote.close()
        self.agents.clear()
        self.restored = problems

    def __enter__(self) -> LabCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_log(text: str, clock: float = 0.0) -> list[tuple[float, str]]:
    """``asctime name LEVEL message`` lines -> (Unix time on our clock, line)."""
    out = []
    for line in text.splitlines():
        stamp = line[:23]
        try:
            t = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
            t += int(stamp[20:23]) / 1000
        except (ValueError, IndexError):
            continue
        out.append((t - clock, line[24:]))
    return out
