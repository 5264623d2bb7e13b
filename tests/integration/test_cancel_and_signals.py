"""``zmqmr cancel``: the job stops, its client hears of it; a clear message otherwise.

Real processes: a cluster of OS processes and ``python -m zmqmr`` as a user
runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import REPO

import zmqmr

ZMQMR = [sys.executable, "-m", "zmqmr"]
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def slow_mapper(key, value):
    time.sleep(0.05)
    yield value % 7, 1


def count(key, values):
    return sum(values)


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

        # the outcome was collected, so the master has forgotten the job
        again = cancel_cmd(handle.job_id, "--master", cluster.address)
        assert again.returncode == 1 and "has no job" in again.stderr, again.stderr


def test_cancel_of_a_job_that_has_ended_says_so_and_fails():
    with zmqmr.LocalCluster(workers=1) as cluster:
        client = cluster.client(timeout=5)
        handle = client.submit(zmqmr.Job(lambda k, v: [(v, 1)], count, inputs=[(1, "a")]))
        wait_for(lambda: job_state(client, handle.job_id) == "succeeded", 30, "the job to end")
        out = cancel_cmd(handle.job_id, "--master", cluster.address)
        assert out.returncode == 1 and "has already ended: succeeded" in out.stderr, out.stderr
        assert dict(handle.wait(timeout=10).items()) == {"a": 1}  # untouched by the cancel


def test_cancel_of_an_unknown_job_names_the_master():
    with zmqmr.LocalCluster(workers=0) as cluster:
        out = cancel_cmd("0123456789abcdef", "--master", cluster.address)
    assert out.returncode == 1
    assert f"the master at {cluster.address} has no job '0123456789abcdef'" in out.stderr
