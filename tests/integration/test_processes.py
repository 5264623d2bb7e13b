"""Processes and the command line: separate master and workers, executors that die with them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import psutil
import pytest
from conftest import REPO, count_words, free_port, stop_processes, wc_mapper, wc_reducer

import zmqmr

ZMQMR = [sys.executable, "-m", "zmqmr"]
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _children(worker_pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(worker_pid).children() if p.is_running()]


def _executors(worker_pid: int) -> list[psutil.Process]:
    """Spawned executors, or forked ones (the worker's own command line)."""
    own = psutil.Process(worker_pid).cmdline()
    return [
        p
        for p in _children(worker_pid)
        if "spawn_main" in " ".join(p.cmdline()) or p.cmdline() == own
    ]


def _gone(pids, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [
            p
            for p in pids
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def test_executors_die_when_their_worker_is_killed_with_sigkill(books):
    with zmqmr.LocalCluster(workers=2, slots=2, heartbeat_interval=0.2, worker_timeout=2) as c:
        victim = c.worker_pids[0]
        assert len(_executors(victim)) == 2
        children = _children(victim)
        os.kill(victim, signal.SIGKILL)
        assert _gone([p.pid for p in children]), "executors outlived their worker"
        # the cluster still runs jobs on the survivor
        job = zmqmr.Job(
            wc_mapper, wc_reducer, inputs=books[:2], combiner=wc_reducer, num_reducers=2
        )
        assert dict(c.client().run(job).items()) == count_words(books[:2])


def test_local_cluster_leaves_no_process_or_directory_behind():
    c = zmqmr.LocalCluster(workers=2).start()
    pids = [c.master_pid, *c.worker_pids]
    pids += [e.pid for w in c.worker_pids for e in _children(w)]
    directory = c.dir
    assert os.path.isdir(directory)
    c.close()
    assert _gone(pids, timeout=2)
    assert not os.path.exists(directory)


class UnpickleCounter:
    """Appends a line to a file each time it is unpickled."""

    def __init__(self, path):
        self.path = path

    def __setstate__(self, state):
        self.__dict__.update(state)
        with open(self.path, "a") as f:
            f.write("unpickled\n")


def test_job_code_reaches_each_executor_once_not_once_per_task(tmp_path):
    marks = tmp_path / "unpickles"
    counter = UnpickleCounter(str(marks))

    def mapper(key, value):
        assert counter.path  # the closure carries the counter to the workers
        yield key % 2, value

    records = [(i, f"{i:0200d}") for i in range(20_000)]  # distinct: no pickle memo
    job = zmqmr.Job(mapper, lambda k, vs: len(list(vs)), inputs=records, num_reducers=3)
    with zmqmr.LocalCluster(workers=2) as c:
        result = c.client().run(job)
    assert dict(result.items()) == {0: 10_000, 1: 10_000}
    tasks = result.stats["map_attempts"] + result.stats["reduce_attempts"]
    assert tasks >= 6
    # one executor per worker: the code was unpickled at most once on each
    assert 1 <= marks.read_text().count("unpickled") <= 2


@pytest.fixture
def separate_cluster(tmp_path):
    """`zmqmr master` and two `zmqmr worker`s started by hand, as a user would."""
    wport, cport = free_port(), free_port()
    procs = []
    logs = []

    def start(args, name):
        log = open(tmp_path / f"{name}.log", "wb")
        logs.append(log)
        p = subprocess.Popen(ZMQMR + args, stdout=log, stderr=subprocess.STDOUT, env=ENV)
        procs.append(p)
        return p

    start(
        [
            "master",
            "--bind",
            f"tcp://127.0.0.1:{wport}",
            "--client-bind",
            f"tcp://127.0.0.1:{cport}",
            "--heartbeat-interval",
            "0.3",
            "--worker-timeout",
            "3",
        ],
        "master",
    )
    for i in range(2):
        start(
            [
                "worker",
                "--master",
                f"tcp://127.0.0.1:{wport}",
                "--data-dir",
                str(tmp_path / f"w{i}"),
            ],
            f"worker{i}",
        )
    address = f"tcp://127.0.0.1:{cport}"
    with zmqmr.Client(address, timeout=2) as client:
        deadline = time.monotonic() + 30
        while True:
            try:
                if len(client.status()["workers"]) == 2:
                    break
            except zmqmr.MasterUnavailable:
                pass
            assert time.monotonic() < deadline, "workers did not register"
            time.sleep(0.1)
    try:
        yield address, procs
    finally:
        stop_processes(procs)
        for log in logs:
            log.close()


def test_cli_run_and_status_against_separate_master_and_workers(separate_cluster, books, tmp_path):
    address, procs = separate_cluster
    out = subprocess.run(
        ZMQMR + ["run", "examples/wordcount.py", *books[:2], "-r", "3", "--master", address, "-q"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    got = Counter()
    for line in out.stdout.splitlines():
        word, n = line.split("\t")
        got[word] = int(n)
    assert got == count_words(books[:2])

    status = subprocess.run(
        ZMQMR + ["status", "--master", address, "--json"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status.returncode == 0, status.stderr
    workers = json.loads(status.stdout)["workers"]
    assert sorted(w["pid"] for w in workers) == sorted(p.pid for p in procs[1:])
    table = subprocess.run(
        ZMQMR + ["status", "--master", address], env=ENV, capture_output=True, text=True, timeout=30
    )
    assert "2 worker(s)" in table.stdout


def test_python_api_submits_to_separate_master_and_workers(separate_cluster, books):
    address, _ = separate_cluster
    job = zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:3], combiner=wc_reducer, num_reducers=4)
    with zmqmr.Client(address) as client:
        result = client.run(job)
    assert list(result.items()) == list(zmqmr.run_serial(job).items())


def test_every_subcommand_has_help():
    for cmd in ["master", "worker", "run", "status", "keygen"]:
        out = subprocess.run(
            ZMQMR + [cmd, "--help"], env=ENV, capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0 and "usage: zmqmr " + cmd in out.stdout


def test_status_against_no_master_fails_quickly():
    t = time.monotonic()
    out = subprocess.run(
        ZMQMR + ["status", "--master", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "MasterUnavailable" in out.stderr
    assert time.monotonic() - t < 15


def test_a_bad_address_fails_at_once_in_client_worker_and_master():
    bad = f"127.0.0.1:{free_port()}"
    script = textwrap.dedent(
        f"""
        import zmqmr
        from zmqmr.master import Master
        from zmqmr.worker import Worker

        def client():
            c = zmqmr.Client({bad!r}, timeout=0.5)
            try:
                c.status()
            finally:
                c.close()  # hung here, in Context.term, before the check

        for make in (client, lambda: Worker({bad!r}), lambda: Master({bad!r}, "tcp://127.0.0.1:*")):
            try:
                make()
            except ValueError as exc:
                print("refused:", exc)
            else:
                print("accepted")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("refused: ") for line in lines), out.stdout
    assert all(f"did you mean tcp://{bad}?" in line for line in lines)
    assert "the master's client address" in lines[0] and "worker address" in lines[1]


def test_master_on_a_taken_port_says_so_without_a_traceback():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            ZMQMR + ["master", "--bind", f"tcp://127.0.0.1:{port}"],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert out.returncode == 1
    assert "cannot bind" in out.stderr and "in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_worker_leaves_other_files_in_its_data_dir_alone(tmp_path):
    data = tmp_path / "data"
    (data / "precious").mkdir(parents=True)
    (data / "precious" / "thesis.tex").write_text("do not delete")
    (data / "notes.txt").write_text("mine")
    with zmqmr.LocalCluster(workers=0) as c:
        proc = subprocess.Popen(
            ZMQMR + ["worker", "--master", c.worker_address, "--data-dir", str(data)],
            env=ENV,
            stderr=subprocess.DEVNULL,
        )
        try:
            c.wait_for_workers(1)
            job = zmqmr.Job(wc_mapper, wc_reducer, inputs=[(1, "a b a")])
            assert dict(c.client().run(job).items()) == {"a": 2, "b": 1}
        finally:
            proc.terminate()
            proc.wait(10)
    assert (data / "precious" / "thesis.tex").read_text() == "do not delete"
    assert (data / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(data)) == ["notes.txt", "precious"]  # its own subdir is gone
