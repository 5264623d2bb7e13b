"""Shared fixtures: the sample books, word-count functions, a check that tests leak no process."""

from __future__ import annotations

import atexit
import copy
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from typing import Any

import psutil
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
#: The sample corpus that ships with the repository (examples/data/README.md).
BOOKS_DIR = os.path.join(REPO, "examples", "data", "gutenberg")
BOOKS = sorted(glob.glob(os.path.join(BOOKS_DIR, "*.txt")))

WORD = re.compile(r"[a-z]+")


def wc_mapper(key, line):
    for word in WORD.findall(line.lower()):
        yield word, 1


def wc_reducer(word, counts):
    return sum(counts)


def serial_items(job, **fast) -> list[tuple[Any, Any]]:
    """``run_serial(job)``'s items in order, with the job's slowed functions swapped for
    the ``fast`` ones they wrap (``mapper=wc_mapper``: the same pairs without the sleeps
    that let a fault land mid-job, which the oracle would only wait through)."""
    import zmqmr

    twin = copy.copy(job)
    for name, fn in fast.items():
        setattr(twin, name, fn)
    return list(zmqmr.run_serial(twin).items())


def count_words(paths) -> Counter:
    """Word counts computed without zmqmr, as an independent answer."""
    c: Counter = Counter()
    for path in paths:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                c.update(WORD.findall(line.lower()))
    return c


def partition_groups(r: int, p: int) -> list[tuple[Any, list[Any]]]:
    """Sorted groups for partition ``p`` of ``r``; every third partition is empty."""
    if p % 3 == 1:
        return []
    return [(f"key-{p}-{i:04d}", [i, i * 2, f"v{i}"]) for i in range(5 + p)]


def write_output(path: str, r: int, groups=partition_groups) -> list[list[Any]]:
    from zmqmr.mapoutput import MapOutputWriter

    w = MapOutputWriter(path, r)
    written = [groups(r, p) for p in range(r)]
    for g in written:
        w.write_segment(g)
    w.close()
    return written


def stop_processes(procs, grace: float = 10.0) -> None:
    """SIGTERM every process, then SIGKILL whichever is still there after ``grace``."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CommandLineCluster:
    """A master and workers started as a user starts them: ``zmqmr master`` and
    ``zmqmr worker`` processes on free ports of 127.0.0.1 (heartbeats every 0.2 s).

    ``start_master`` may be called again after ``kill_master``: the new master
    binds the same ports (and reads the same ``state_dir``). Use it as a
    context manager: every process it started is stopped at the end.
    """

    def __init__(
        self,
        tmp_path,
        workers: int = 2,
        *,
        worker_timeout: float,
        state_dir=None,
        worker_sets: tuple[str, ...] = (),
    ) -> None:
        import sys

        wport, cport = free_port(), free_port()
        self.env = {**os.environ, "PYTHONPATH": REPO}
        self.address = f"tcp://127.0.0.1:{cport}"
        zmqmr_cmd = [sys.executable, "-m", "zmqmr"]
        self.master_args = [*zmqmr_cmd, "master", "--bind", f"tcp://127.0.0.1:{wport}"]
        self.master_args += ["--client-bind", self.address, "--heartbeat-interval", "0.2"]
        self.master_args += ["--worker-timeout", f"{worker_timeout:g}"]
        if state_dir is not None:
            self.master_args += ["--state-dir", str(state_dir)]
        sets = [arg for s in worker_sets for arg in ("--set", s)]
        self.worker_args = [
            [*zmqmr_cmd, "worker", "--master", f"tcp://127.0.0.1:{wport}"]
            + ["--data-dir", str(tmp_path / f"w{i}"), *sets]
            for i in range(workers)
        ]
        self.procs: list[subprocess.Popen] = []
        self.master: subprocess.Popen | None = None

    def _spawn(self, args: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(args, env=self.env, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def start_master(self) -> subprocess.Popen:
        self.master = self._spawn(self.master_args)
        return self.master

    def start_workers(self) -> None:
        for args in self.worker_args:
            self._spawn(args)

    def kill_master(self) -> None:
        """SIGKILL the master and reap it."""
        assert self.master is not None
        self.master.kill()
        self.master.wait()

    def registered(self, n: int | None = None) -> bool:
        """Whether the master answers and knows ``n`` workers (default: all of them)."""
        import zmqmr

        want = len(self.worker_args) if n is None else n
        try:
            with zmqmr.Client(self.address, timeout=0.5) as cl:
                return len(cl.status()["workers"]) == want
        except zmqmr.MasterUnavailable:  # still starting, or restarting
            return False

    def __enter__(self) -> CommandLineCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        stop_processes(self.procs)


@pytest.fixture(scope="session")
def books() -> list[str]:
    assert BOOKS, f"no books found in {BOOKS_DIR}"
    return BOOKS


# Every process a test starts inherits this marker, so a process that outlives
# its parent (an orphaned executor, say) is still recognised as ours.
MARKER = "ZMQMR_TEST_SESSION"
os.environ.setdefault(MARKER, f"{os.getpid()}-{time.time()}")

# The default keys of every process the tests start (zmqmr uses CURVE by
# default): a directory of this session's, never the real ~/.zmqmr/keys.
# Removed at exit, which a --collect-only run reaches too.
SESSION_KEYS_PARENT = tempfile.mkdtemp(prefix="zmqmr-test-keys-")
os.environ["ZMQMR_KEYS"] = os.path.join(SESSION_KEYS_PARENT, "keys")
atexit.register(shutil.rmtree, SESSION_KEYS_PARENT, True)


def _ours() -> dict[int, int]:
    """pid -> parent pid of every live process carrying this session's marker."""
    found = {}
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "ppid", "status"]):
        if proc.info["pid"] == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if proc.environ().get(MARKER) == os.environ[MARKER]:
                found[proc.info["pid"]] = proc.info["ppid"]
        except psutil.Error:
            continue
    return found


@pytest.fixture(autouse=True)
def no_leaked_processes():
    """Every test must leave no process of its own behind.

    Processes that a longer-lived fixture's processes start (a module-scoped
    cluster's worker restarting an executor) are that fixture's, not leaks.
    """
    before = set(_ours())
    yield
    assert_no_leaks(before)


def assert_no_leaks(before: set[int], exempt=set) -> None:
    """No process of this session's that is not in ``before`` (nor a child of one),
    nor in ``exempt()``, is alive (give them 10 s to go)."""
    deadline = time.monotonic() + 10
    while True:
        now = _ours()
        leaked = {p for p, parent in now.items() if p not in before and parent not in before}
        leaked -= exempt()
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not leaked, f"processes left behind: {sorted(leaked)}"


@pytest.fixture(scope="session", autouse=True)
def nothing_left_at_the_end():
    yield
    deadline = time.monotonic() + 10
    while _ours() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _ours(), f"processes left at the end of the session: {_ours()}"
