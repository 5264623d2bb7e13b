"""LocalCluster: a master and N worker processes on this machine.

Each is a real OS process running ``zmqmr master|worker`` on free ports of
127.0.0.1 with its own temporary data directory, and each dies with the
process that started it. They are forked by one launcher process
(``zmqmr.launcher``), which imports zmqmr once for all of them: a process
started by ``python -m zmqmr`` would spend 0.2-0.3 s of CPU importing first.
``close`` (or leaving the ``with`` block) stops them and removes every file
they made.
"""

from __future__ import annotations

import compileall
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

import psutil

from .client import Client
from .config import ClusterSettings, WorkerSettings
from .errors import ClusterError
from .security import key_dir

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_PKG_PARENT = os.path.dirname(_PKG_DIR)


def _cache_bytecode() -> None:
    """Compile zmqmr's modules to bytecode once, before starting processes that import them.

    Under PYTHONDONTWRITEBYTECODE, or in an editable install that has not been
    imported yet, there is no bytecode, so the master, every worker and every
    executor would each compile zmqmr's sources again (about 0.1 s of CPU
    apiece, at the moment a job starts). A no-op when the bytecode is up to
    date (pip compiles regular installs) or the package directory is read-only.
    """
    try:
        compileall.compile_dir(_PKG_DIR, maxlevels=0, quiet=2)
    except OSError:
        pass


def _settings_args(values: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in values.items():
        args += ["--set", f"{name}={value}"]
    return args


class _Launcher:
    """The ``zmqmr.launcher`` process of a cluster: forks its masters and workers."""

    def __init__(self, env: dict[str, str], log: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zmqmr.launcher"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
        )
        assert self.proc.stdout is not None
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._out, False)
        self._lock = threading.Lock()
        self._pending = b""
        self.exits: dict[int, int] = {}
        self._replies: list[dict[str, Any]] = []
        self.gone = False

    def spawn(self, args: list[str], log: str, env: dict[str, str]) -> _Forked:
        request = json.dumps({"args": args, "log": log, "env": env}) + "\n"
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(request.encode())
            self.proc.stdin.flush()
        except OSError:
            self.gone = True
        while not self._replies and not self.gone:
            self.read(None)
        if not self._replies:
            raise ClusterError("the launcher of the local cluster died")
        msg = self._replies.pop(0)
        if "error" in msg:
            raise ClusterError(f"the launcher could not fork: {msg['error']}")
        return _Forked(self, int(msg["pid"]))

    def read(self, timeout: float | None) -> list[dict[str, Any]]:
        """What the launcher said within ``timeout`` (None: until it says something);
        the ends of its children are noted in ``exits``."""
        if self.gone:
            return []
        select.select([self._out], [], [], timeout)
        with self._lock:  # one reader at a time (a thread may poll while another waits)
            try:
                data = os.read(self._out, 65536)
            except BlockingIOError:
                return []
            if not data:  # dead: its children die with it (PR_SET_PDEATHSIG)
                self.gone = True
                self.proc.wait()
                return []
            self._pending += data
            *lines, self._pending = self._pending.split(b"\n")
            said = [json.loads(line) for line in lines]
            for msg in said:
                if "exit" in msg:
                    self.exits[int(msg["exit"])] = int(msg["code"])
                else:  # the answer to a spawn, whichever thread read it
                    self._replies.append(msg)
        return said

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class _Forked:
    """A process the launcher forked, with the parts of ``subprocess.Popen`` a cluster
    (and its tests) use: ``pid``, ``returncode``, ``poll``, ``wait`` and signals."""

    def __init__(self, launcher: _Launcher, pid: int) -> None:
        self._launcher = launcher
        self.pid = pid
        self.returncode: int | None = None
        try:  # psutil tells this process from a later one given the same pid
            self._process: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self._process = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._launcher.read(0)
            self._settle()
        return self.returncode

    def _settle(self) -> None:
        code = self._launcher.exits.get(self.pid)
        if code is not None:
            self.returncode = code
        elif self._launcher.gone and not self._alive():
            self.returncode = -signal.SIGKILL  # died with its launcher

    def _alive(self) -> bool:
        """Whether the process still runs: after its launcher's death the kernel's
        SIGKILL reaches it a moment later, and no one is left to report its end."""
        try:
            return (
                self._process is not None
                and self._process.is_running()
                and self._process.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.NoSuchProcess:
            return False

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"zmqmr process {self.pid}", timeout or 0)
            if self._launcher.gone:  # nothing left to read: look again in a moment
                time.sleep(0.02 if left is None else min(0.02, left))
            else:
                self._launcher.read(left)
            self._settle()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # not a pid the system may have given another process
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class LocalCluster:
    """An embedded cluster: ``with LocalCluster(workers=4) as c: c.client().run(job)``.

    Every socket speaks CURVE with the keys of ``keys``, else of the default
    key directory (``$ZMQMR_KEYS`` or ``~/.zmqmr/keys``, made on first use,
    readable by this user only), so no other account of the machine can
    submit a job; ``insecure=True`` turns CURVE off, with a warning.
    Settings: ``heartbeat_interval`` and ``worker_timeout`` (seconds) and the
    other fields of ``ClusterSettings`` go to the master; ``slots`` and the
    fields of ``WorkerSettings`` go to every worker. ``state_dir`` gives the
    master a journal there (``zmqmr master --state-dir``): after
    ``restart_master`` it resumes its jobs. The directory is the caller's and
    stays after ``close``.
    """

    def __init__(
        self,
        workers: int = 2,
        startup_timeout: float = 60.0,
        client_timeout: float = 10.0,
        keys: str | None = None,
        insecure: bool = False,
        state_dir: str | None = None,
        **settings: Any,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an int >= 0, got {workers!r}")
        cluster_names = ClusterSettings.field_names()
        worker_names = {f for f in WorkerSettings.__dataclass_fields__}
        unknown = set(settings) - cluster_names - worker_names
        if unknown:
            raise TypeError(f"unknown LocalCluster settings: {', '.join(sorted(unknown))}")
        self.cluster_settings = ClusterSettings(
            **{k: v for k, v in settings.items() if k in cluster_names}
        )
        self.worker_settings = WorkerSettings(
            **{k: v for k, v in settings.items() if k in worker_names}
        )
        self._worker_overrides = {k: v for k, v in settings.items() if k in worker_names}
        self._cluster_overrides = {k: v for k, v in settings.items() if k in cluster_names}
        self.num_workers = workers
        #: The master's journal (--state-dir): kept at close, as a user's directory is.
        self.state_dir = None if state_dir is None else os.path.abspath(state_dir)
        self.keys = key_dir(keys, insecure, "the local cluster")
        self.insecure = self.keys is None
        self._key_args = ["--insecure"] if self.keys is None else ["--keys", self.keys]
        self.startup_timeout = startup_timeout
        self.client_timeout = client_timeout
        self.dir = ""
        self.address = ""
        self.worker_address = ""
        #: The master's dashboard, token included (a free port of 127.0.0.1).
        self.dashboard_url = ""
        self._http = "127.0.0.1:0"
        self.master_proc: _Forked | None = None
        self.worker_procs: list[_Forked] = []
        self._launcher: _Launcher | None = None
        self._logs: list[IO[bytes]] = []
        self._clients: list[Client] = []

    # -- processes -------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        path = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = _PKG_PARENT + (os.pathsep + path if path else "")
        # The executors' seed (zmqmr.partitioning): a worker under it forks its executors.
        env["PYTHONHASHSEED"] = "0"
        return env

    def _popen(self, args: list[str], log_name: str) -> _Forked:
        """``zmqmr ARGS``, forked by the launcher (started first, or again if it died)."""
        if self._launcher is None or self._launcher.gone:
            log = open(os.path.join(self.dir, "launcher.log"), "ab")  # noqa: SIM115 - closed in close()
            self._logs.append(log)
            self._launcher = _Launcher(self._env(), log)
        path = os.path.join(self.dir, log_name)
        return self._launcher.spawn([*args, "--die-with-parent"], path, self._env())

    def _start_master(self, worker_bind: str, client_bind: str, workers: int = 0) -> None:
        """Start the master and wait for its announce file; ``workers`` workers are
        started beside it, each waiting for the file (so their start-up overlaps
        the master's)."""
        announce = self._announce
        if os.path.exists(announce):
            os.unlink(announce)
        state = [] if self.state_dir is None else ["--state-dir", self.state_dir]
        self.master_proc = self._popen(
            [
                "master",
                "--bind",
                worker_bind,
                "--client-bind",
                client_bind,
                "--announce",
                announce,
                "--http",
                self._http,
                *state,
                *self._key_args,
                *_settings_args(self._cluster_overrides),
            ],
            "master.log",
        )
        for _ in range(workers):
            self.add_worker()
        deadline = time.monotonic() + self.startup_timeout
        while not os.path.exists(announce):
            if self.master_proc.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"the master did not start:\n{self.log('master')}")
            time.sleep(0.005)  # a stat per turn: the workers wait on the same file
        with open(announce) as f:
            addresses = json.load(f)
        self.address = addresses["client_address"]
        self.worker_address = addresses["worker_address"]
        self.dashboard_url = addresses.get("dashboard_url") or ""
        if self.dashboard_url:  # a restarted master serves it at the same address
            port = self.dashboard_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
            self._http = f"127.0.0.1:{port}"

    @property
    def _announce(self) -> str:
        return os.path.join(self.dir, "master.json")

    def restart_master(self) -> _Forked:
        """Start the master again at the same addresses (after it died or was killed),
        with the same flags: with a state_dir, it resumes the jobs it had."""
        if self.master_proc is not None and self.master_proc.poll() is None:
            raise ClusterError("the master is still running")
        self._start_master(self.worker_address, self.address)
        assert self.master_proc is not None
        return self.master_proc

    def start(self) -> LocalCluster:
        _cache_bytecode()
        self.dir = tempfile.mkdtemp(prefix="zmqmr-local-")
        try:
            self._start_master("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", self.num_workers)
            self.wait_for_workers(self.num_workers, self.startup_timeout)
        except BaseException:
            self.close()
            raise
        return self

    def add_worker(self) -> _Forked:
        """Start one more worker process; returns it."""
        n = len(self.worker_procs)
        data_dir = os.path.join(self.dir, f"worker-{n}")
        # Before the master has announced itself, the worker waits for its file.
        master = ["--master", self.worker_address] if self.worker_address else []
        proc = self._popen(
            [
                "worker",
                *(master or ["--master-announce", self._announce]),
                "--data-dir",
                data_dir,
                *self._key_args,
                *_settings_args(self._worker_overrides),
            ],
            f"worker-{n}.log",
        )
        self.worker_procs.append(proc)
        return proc

    def wait_for_workers(self, n: int, timeout: float = 30.0) -> None:
        """Block until the master knows ``n`` live workers."""
        deadline = time.monotonic() + timeout
        with Client(
            self.address, keys=self.keys, timeout=self.client_timeout, insecure=self.insecure
        ) as client:
            while True:
                if len(client.status()["workers"]) >= n:
                    return
                if time.monotonic() > deadline:
                    logs = "\n".join(self.log(f"worker-{i}") for i in range(len(self.worker_procs)))
                    raise ClusterError(f"only some of {n} workers registered in {timeout}s\n{logs}")
                time.sleep(0.02)  # the job waits on this: a status costs the master little

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.worker_procs]

    @property
    def master_pid(self) -> int | None:
        return self.master_proc.pid if self.master_proc else None

    def log(self, name: str) -> str:
        """The output of the master (``"master"``) or of worker ``"worker-N"``."""
        try:
            with open(os.path.join(self.dir, f"{name}.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def client(self, timeout: float | None = None) -> Client:
        """A client of this cluster (closed with the cluster)."""
        c = Client(
            self.address,
            keys=self.keys,
            timeout=self.client_timeout if timeout is None else timeout,
            insecure=self.insecure,
        )
        self._clients.append(c)
        return c

    # -- shutdown -------------------------------------------------------------------

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self._clients = []
        procs = list(self.worker_procs) + ([self.master_proc] if self.master_proc else [])
        if self._launcher is not None and self._launcher.proc.poll() is None:
            self._launcher.proc.send_signal(signal.SIGCONT)  # a paused one reaps no child
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
                    p.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:  # unreaped: the launcher's end takes it
                    pass
        if self._launcher is not None:
            self._launcher.close()
            self._launcher = None
        for log in self._logs:
            log.close()
        self._logs = []
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "worker_procs", None) and any(p.poll() is None for p in self.worker_procs):
            self.close()
