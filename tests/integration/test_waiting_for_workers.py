"""A job on a cluster with no worker says so, and gives up after ``worker_wait``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO, wc_mapper, wc_reducer

import zmqmr


def test_a_job_with_no_worker_is_cancelled_after_worker_wait():
    with zmqmr.LocalCluster(workers=0, heartbeat_interval=0.2, worker_timeout=2.0) as c:
        job = zmqmr.Job(wc_mapper, wc_reducer, inputs=[(0, "a b"), (1, "b")])
        with zmqmr.Client(c.address, worker_wait=1.0) as client:
            handle = client.submit(job)
            start = time.monotonic()
            with pytest.raises(zmqmr.ClusterError, match="no worker joined"):
                handle.wait(progress=False)
            assert 1.0 <= time.monotonic() - start < 10
            states = {j["id"]: j["state"] for j in client.status()["jobs"]}
            assert states.get(handle.job_id, "cancelled") == "cancelled"
        # a worker that joins later finds nothing left of that job; a new job runs
        c.add_worker()
        c.wait_for_workers(1, 60)
        with zmqmr.Client(c.address, worker_wait=1.0) as client:
            assert dict(client.run(job).items()) == {"a": 1, "b": 2}


def test_worker_wait_must_be_positive():
    with pytest.raises(ValueError, match="worker_wait"):
        zmqmr.Client("tcp://127.0.0.1:1", worker_wait=0)


def test_progress_output_while_waiting_names_the_wait():
    with zmqmr.LocalCluster(workers=0, heartbeat_interval=0.2, worker_timeout=2.0) as c:
        job = zmqmr.Job(wc_mapper, wc_reducer, inputs=[(0, "a")])
        with zmqmr.Client(c.address, worker_wait=1.0) as client:
            handle = client.submit(job)
            out = io.StringIO()
            saved, sys.stderr = sys.stderr, out
            try:
                with pytest.raises(zmqmr.ClusterError):
                    handle.wait(progress=True)
            finally:
                sys.stderr = saved
        assert "waiting for a worker to join the cluster" in out.getvalue()


def test_zmqmr_run_with_worker_wait_says_why_it_gave_up(books):
    with zmqmr.LocalCluster(workers=0, heartbeat_interval=0.2, worker_timeout=2.0) as c:
        env = {**os.environ, "PYTHONPATH": REPO}
        wordcount = os.path.join(REPO, "examples", "wordcount.py")
        cmd = [sys.executable, "-m", "zmqmr", "run", wordcount, books[0]]
        cmd += ["--master", c.address, "--worker-wait", "1"]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode != 0
    assert "no worker joined the cluster within 1s" in out.stderr
    assert "Traceback" not in out.stderr
