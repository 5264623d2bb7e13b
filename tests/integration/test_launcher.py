"""A LocalCluster's processes are forked by one launcher (zmqmr.launcher), which imports
zmqmr once: real processes all the same, named, signalled and reaped as before."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import zmqmr

pytestmark = pytest.mark.timeout(120)

FAST = dict(heartbeat_interval=0.2, worker_timeout=3.0)


def words(key, line):
    for w in line.split():
        yield w, 1


def total(key, counts):
    return sum(counts)


JOB = zmqmr.Job(words, total, inputs=[(i, f"a b{i % 3} c") for i in range(60)], num_reducers=2)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_master_and_workers_are_forked_by_one_launcher_and_named():
    with zmqmr.LocalCluster(workers=2, **FAST) as c:
        result = c.client().run(JOB, progress=False)
        assert dict(result.items()) == dict(zmqmr.run_serial(JOB).items())
        master = psutil.Process(c.master_pid)
        workers = [psutil.Process(pid) for pid in c.worker_pids]
        launcher = master.parent()
        assert launcher is not None and launcher.ppid() == os.getpid()
        assert "zmqmr.launcher" in launcher.cmdline()
        assert master.name() == "zmqmr master"
        assert [w.name() for w in workers] == ["zmqmr worker"] * 2
        assert all(w.ppid() == launcher.pid for w in workers)
        # each worker's executors are its own forks, under its name
        for w in workers:
            assert [e.name() for e in w.children()] == ["zmqmr worker"] * len(w.children())
            assert w.children()
    assert gone(launcher.pid) and gone(master.pid)
    assert all(gone(w.pid) for w in workers)


def test_a_killed_worker_is_reaped_with_its_signal_and_the_job_still_exact():
    with zmqmr.LocalCluster(workers=2, **FAST) as c:
        victim = c.worker_procs[0]
        assert victim.poll() is None and victim.returncode is None
        victim.kill()
        assert victim.wait(10) == -signal.SIGKILL
        assert victim.poll() == -signal.SIGKILL
        victim.kill()  # an ended process is not signalled again (its pid may be another's)
        result = c.client().run(JOB, progress=False)
        assert dict(result.items()) == dict(zmqmr.run_serial(JOB).items())
        # a worker that stops on SIGTERM exits 0, as `zmqmr worker` does
        other = c.worker_procs[1]
        other.terminate()
        assert other.wait(20) == 0
        assert gone(other.pid)
        c.add_worker()  # forked by the same launcher, and joins
        c.wait_for_workers(1, 30)
        result = c.client().run(JOB, progress=False)
        assert dict(result.items()) == dict(zmqmr.run_serial(JOB).items())


def test_the_launchers_death_takes_the_cluster_with_it_and_close_still_cleans_up():
    c = zmqmr.LocalCluster(workers=1, **FAST).start()
    try:
        launcher = psutil.Process(c.master_pid).parent()
        assert launcher is not None
        launcher.send_signal(signal.SIGINT)  # Ctrl-C in the terminal is the owner's to handle
        time.sleep(0.5)
        assert launcher.is_running() and c.master_proc is not None
        assert c.master_proc.poll() is None
        launcher.kill()
        deadline = time.monotonic() + 10
        while c.master_proc.poll() is None or c.worker_procs[0].poll() is None:
            assert time.monotonic() < deadline, "the launcher's children outlived it"
            time.sleep(0.05)
        assert c.master_proc.returncode == c.worker_procs[0].returncode == -signal.SIGKILL
        assert gone(c.master_pid) and gone(c.worker_pids[0])
    finally:
        c.close()
    assert not os.path.exists(c.dir)


def test_close_ends_a_cluster_whose_launcher_is_paused():
    c = zmqmr.LocalCluster(workers=1, **FAST).start()
    pids = [c.master_pid, *c.worker_pids]
    launcher = psutil.Process(c.master_pid).parent()
    assert launcher is not None
    launcher.suspend()  # it can neither reap its children nor report their ends
    t = time.monotonic()
    c.close()
    assert time.monotonic() - t < 20
    assert all(gone(pid) for pid in pids) and not os.path.exists(c.dir)
    assert not launcher.is_running() or launcher.status() == psutil.STATUS_ZOMBIE


def test_a_request_the_launcher_cannot_read_is_answered_with_an_error():
    import json
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "zmqmr.launcher"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdin is not None and proc.stdout is not None
        for line in ("[]", '{"args": 5}', '"x"', "{", '{"log": "x"}'):
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())
            assert "error" in answer, (line, answer)
        assert proc.poll() is None  # still there for the next request
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        assert proc.wait(10) == 0
        if proc.stdout is not None:
            proc.stdout.close()
