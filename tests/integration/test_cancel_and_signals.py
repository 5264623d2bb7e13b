"""``zmqmr cancel``, and SIGINT / SIGTERM on ``zmqmr run``: the job stops, nothing is left.

Real processes and real signals: a cluster of OS processes, ``python -m
zmqmr`` as a user runs it, and signals sent as a terminal (Ctrl-C reaches the
whole foreground process group) or a process manager (SIGTERM to one pid)
sends them.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from conftest import REPO, stop_processes

import zmqmr

ZMQMR = [sys.executable, "-m", "zmqmr"]
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def slow_mapper(key, value):
    time.sleep(0.05)
    yield value % 7, 1


def count(key, values):
    return sum(values)


def slow_job(tmp_path) -> tuple[str, str]:
    """A job file whose map phase takes minutes, and its input; the mapper marks its start."""
    job = tmp_path / "slow.py"
    job.write_text(
        textwrap.dedent(
            """\
            import os
            import time

            def mapper(key, line):
                if "STARTED_FILE" in os.environ:  # the executor's environment: its worker's
                    open(os.environ["STARTED_FILE"], "a").close()
                time.sleep(0.05)
                yield len(line), 1

            def reducer(n, counts):
                return sum(counts)
            """
        )
    )
    data = tmp_path / "lines.txt"
    data.write_text("".join(f"line {i}\n" for i in range(5000)))
    return str(job), str(data)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def running_job(client):
    """The one job the master runs with an attempt in progress, or None."""
    jobs = [j for j in client.status()["jobs"] if j["state"] == "running" and j["running"]]
    return jobs[0] if len(jobs) == 1 else None


def job_state(client, job_id):
    return {j["id"]: j["state"] for j in client.status()["jobs"]}.get(job_id)


def idle_workers(client):
    workers = client.status()["workers"]
    return bool(workers) and all(w["running"] == 0 for w in workers)


def cancel_cmd(*args):
    return subprocess.run(
        ZMQMR + ["cancel", *args], env=ENV, capture_output=True, text=True, timeout=30
    )


# -- zmqmr cancel ------------------------------------------------------------------------------


def test_cancel_stops_a_running_job_and_its_client_hears_of_it():
    job = zmqmr.Job(slow_mapper, count, inputs=[(i, i) for i in range(3000)])
    with zmqmr.LocalCluster(workers=1) as cluster:
        handle = cluster.client().submit(job)
        watcher = cluster.client(timeout=5)
        wait_for(lambda: running_job(watcher), 30, "the job to start")

        out = cancel_cmd(handle.job_id[:6], "--master", cluster.address)  # a prefix will do
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"cancelled job {handle.job_id} ({job.name})"
        assert job_state(watcher, handle.job_id) == "cancelled"
        wait_for(lambda: idle_workers(watcher), 10, "the worker to drop the attempt")
        with pytest.raises(zmqmr.JobCancelled):
            handle.wait(timeout=10)

        # the outcome was collected: the master's history says how the job ended
        again = cancel_cmd(handle.job_id, "--master", cluster.address)
        assert again.returncode == 1, again.stderr
        assert "has already ended: cancelled" in again.stderr, again.stderr


def test_cancel_of_a_job_that_has_ended_says_so_and_fails():
    with zmqmr.LocalCluster(workers=1) as cluster:
        client = cluster.client(timeout=5)
        handle = client.submit(zmqmr.Job(lambda k, v: [(v, 1)], count, inputs=[(1, "a")]))
        wait_for(lambda: job_state(client, handle.job_id) == "succeeded", 30, "the job to end")
        out = cancel_cmd(handle.job_id, "--master", cluster.address)
        assert out.returncode == 1 and "has already ended: succeeded" in out.stderr, out.stderr
        assert dict(handle.wait(timeout=10).items()) == {"a": 1}  # untouched by the cancel
        # collected: in the master's history now, which says how it ended
        out = cancel_cmd(handle.job_id, "--master", cluster.address)
        assert out.returncode == 1 and "has already ended: succeeded" in out.stderr, out.stderr


def test_cancel_of_an_unknown_job_names_the_master():
    with zmqmr.LocalCluster(workers=0) as cluster:
        out = cancel_cmd("0123456789abcdef", "--master", cluster.address)
    assert out.returncode == 1
    assert f"the master at {cluster.address} has no job '0123456789abcdef'" in out.stderr


# -- signals on zmqmr run ------------------------------------------------------------------------


def send(proc, how):
    """``ctrl-c``: SIGINT to the process group, as a terminal sends it; else one signal."""
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)


SIGNALS = [("ctrl-c", "SIGINT", 130), ("sigterm", "SIGTERM", 143)]


def start(args, env):
    return subprocess.Popen(
        ZMQMR + args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a command
    )


def alive(proc):
    """For wait_for: fail at once, with its output, if ``proc`` has exited."""
    if proc.poll() is not None:
        pytest.fail(f"exited {proc.returncode}: {proc.communicate()}")


@pytest.mark.parametrize("how, name, code", SIGNALS)
def test_a_signal_on_run_with_a_master_cancels_the_job_it_submitted(tmp_path, how, name, code):
    job, data = slow_job(tmp_path)
    with zmqmr.LocalCluster(workers=1) as cluster:
        watcher = cluster.client(timeout=5)
        with start(["run", job, data, "--master", cluster.address, "-q"], ENV) as proc:
            try:
                found = wait_for(
                    lambda: alive(proc) or running_job(watcher), 60, "the job to start"
                )
                send(proc, how)
                stdout, stderr = proc.communicate(timeout=30)
            finally:
                stop_processes([proc])
        assert proc.returncode == code, stderr
        assert stderr == f"zmqmr: {name}: cancelled job {found['id']}\n"
        assert stdout == ""
        # The client was waiting on the job, so the master handed it the outcome
        # and forgot the job; running, it would still be listed.
        assert job_state(watcher, found["id"]) in (None, "cancelled")
        wait_for(lambda: idle_workers(watcher), 10, "the worker to drop the attempt")


def _descendants(pid):
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("how, name, code", SIGNALS)
def test_a_signal_on_a_local_run_removes_its_cluster_and_its_files(tmp_path, how, name, code):
    job, data = slow_job(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    started = tmp_path / "started"
    env = {**ENV, "STARTED_FILE": str(started), "TMPDIR": str(tmp)}
    with start(["run", job, data, "-q", "--workers", "2"], env) as proc:
        try:
            wait_for(lambda: alive(proc) or started.exists(), 60, "a mapper to start")
            family = _descendants(proc.pid)
            assert len(family) >= 5  # a master, two workers, an executor each
            assert len(glob.glob(str(tmp / "zmqmr-local-*"))) == 1
            send(proc, how)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            stop_processes([proc])
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and stdout == ""
    _, running = psutil.wait_procs(family, timeout=10)
    assert running == [], f"left running: {running}"
    assert os.listdir(tmp) == [], "the local cluster's files were left behind"
