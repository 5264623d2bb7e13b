"""Start-up of a LocalCluster: its workers start beside the master and wait for its
announce file (``zmqmr worker --master-announce``), then join it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO, stop_processes
from test_data_correctness import Name  # a user __hash__: keys partitioned by hash()

import zmqmr

pytestmark = pytest.mark.timeout(180)

ZMQMR = [sys.executable, "-m", "zmqmr"]
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_a_worker_started_before_the_master_waits_for_its_announce_file_and_joins(tmp_path):
    announce = str(tmp_path / "master.json")
    worker = subprocess.Popen(
        [*ZMQMR, "worker", "--master-announce", announce, "--insecure", "--data-dir",
         str(tmp_path / "w"), "--die-with-parent"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    master = None
    try:
        time.sleep(1.0)  # the worker has no master to go to yet: it waits, it does not fail
        assert worker.poll() is None
        master = subprocess.Popen(
            [*ZMQMR, "master", "--bind", "tcp://127.0.0.1:*", "--client-bind",
             "tcp://127.0.0.1:*", "--announce", announce, "--insecure", "--die-with-parent"],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not os.path.exists(announce):
            assert master.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with open(announce) as f:
            client_address = json.load(f)["client_address"]
        with zmqmr.Client(client_address, insecure=True, timeout=10) as client:
            while not client.status()["workers"]:
                assert worker.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            job = zmqmr.Job(
                mapper=lambda k, v: [(w, 1) for w in v.split()],
                reducer=lambda k, vs: sum(vs),
                inputs=[(1, "a b a"), (2, "b c")],
            )
            result = client.run(job, progress=False)
            assert (
                dict(result.items())
                == dict(zmqmr.run_serial(job).items())
                == {
                    "a": 2,
                    "b": 2,
                    "c": 1,
                }
            )
    finally:
        stop_processes([worker] if master is None else [worker, master], grace=20)


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "cannot read the master's address"),
        ('{"client_address": "tcp://127.0.0.1:1"}', "cannot read the master's address"),
        ('{"worker_address": "inproc://x"}', "cannot read the master's address"),
    ],
)
def test_a_bad_announce_file_stops_the_worker_with_a_message(tmp_path, content, message):
    announce = tmp_path / "master.json"
    announce.write_text(content)
    out = subprocess.run(
        [*ZMQMR, "worker", "--master-announce", str(announce), "--insecure", "--data-dir",
         str(tmp_path / "w")],
        env=ENV, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert message in out.stderr


def test_a_worker_needs_a_master_address_or_an_announce_file(tmp_path):
    out = subprocess.run(
        [*ZMQMR, "worker", "--insecure", "--data-dir", str(tmp_path / "w")],
        env=ENV, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--master" in out.stderr


def test_a_local_cluster_starts_its_workers_beside_the_master_and_runs_a_job():
    job = zmqmr.Job(
        mapper=lambda k, v: [(w, 1) for w in v.split()],
        reducer=lambda k, vs: sum(vs),
        inputs=[(i, f"w{i % 5} w{i % 3}") for i in range(200)],
    )
    with zmqmr.LocalCluster(workers=2) as cluster:
        assert len(cluster.client().status()["workers"]) == 2
        result = cluster.client().run(job, progress=False)
        assert dict(result.items()) == dict(zmqmr.run_serial(job).items())
        cluster.add_worker()  # after start-up a worker is given the address itself
        cluster.wait_for_workers(3, 60)


def test_a_local_clusters_executors_are_forked_and_hash_keys_as_every_executor_does():
    """The first executors are forked from their worker (same command line, no
    interpreter of their own); a restarted one is spawned; with either, keys
    partitioned by ``hash()`` land in one reduce each, as under run_serial."""
    import psutil

    job = zmqmr.Job(
        mapper=lambda k, v: [(Name(w), 1) for w in v.split()],
        reducer=lambda k, vs: sum(vs),
        inputs=[(i, " ".join(f"w{(i * j) % 37}" for j in range(9))) for i in range(400)],
        num_reducers=5,
        split_size=20,  # maps on both workers
    )
    expected = sorted((k.text, v) for k, v in zmqmr.run_serial(job).items())
    with zmqmr.LocalCluster(workers=2) as cluster:
        for pid in cluster.worker_pids:
            worker = psutil.Process(pid)
            executors = [p for p in worker.children() if p.cmdline() == worker.cmdline()]
            assert len(executors) == 1, worker.children()
        got = sorted((k.text, v) for k, v in cluster.client().run(job, progress=False).items())
        assert got == expected
        worker = psutil.Process(cluster.worker_pids[0])
        (forked,) = [p for p in worker.children() if p.cmdline() == worker.cmdline()]
        forked.kill()
        forked.wait(30)
        deadline = time.monotonic() + 60
        while not any("spawn_main" in " ".join(p.cmdline()) for p in worker.children()):
            assert time.monotonic() < deadline, worker.children()
            time.sleep(0.05)
        got = sorted((k.text, v) for k, v in cluster.client().run(job, progress=False).items())
        assert got == expected
