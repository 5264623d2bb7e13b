"""The master says why: every decision it takes is a log line naming its reason and stimulus.

Real processes, a real SIGKILL; the lines are read from the master's own log
(INFO, as ``zmqmr master`` logs by default) and every answer is checked
against ``run_serial``.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import threading
import time

import pytest
from conftest import BOOKS, wc_mapper, wc_reducer

import zmqmr
from zmqmr import layout
from zmqmr.master import Master

FAST = dict(
    insecure=True,
    heartbeat_interval=0.2,
    worker_timeout=1.5,
    fetch_timeout=0.5,
    fetch_retries=2,
    reconnect_initial=0.2,
    reconnect_max=1.0,
)
#: How every explained line ends: the stimulus that caused it, e.g. "[tick-42]".
STIMULUS = r" \[[a-z_]+-\d+\]$"
#: Three smaller books: about 20 map tasks of 32 KiB.
BOOKS3 = [b for b in BOOKS if re.search(r"being_ernest|metamorphosis|frankenstein", b)]


def slow_wc_mapper(key, line):
    time.sleep(0.0005)  # a map task takes a few tenths of a second: a kill lands mid-job
    yield from wc_mapper(key, line)


def failing_mapper(key, line):
    if "Gregor" in line:
        raise ValueError("no vermin in this job")
    yield from wc_mapper(key, line)


def wait_until(predicate, timeout=30.0, every=0.02, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what} not reached within {timeout}s")


def map_outputs(cluster, n: int, job_id: str) -> list[tuple[str, int, int]]:
    """The finished map outputs on worker ``n``'s disk (files renamed into place when
    whole, or entries of packs appended whole)."""
    held = layout.held_outputs(os.path.join(cluster.dir, f"worker-{n}", "zmqmr-maps"))
    return [h for h in held if h[0] == job_id]


def assert_logged(cluster, lines: dict[str, str], timeout: float = 10.0) -> None:
    """Each pattern matches a whole line of the master's log, ending with its stimulus."""
    missing = dict(lines)
    deadline = time.monotonic() + timeout
    while missing and time.monotonic() < deadline:
        log = cluster.log("master")
        missing = {k: r for k, r in missing.items() if not re.search(r + STIMULUS, log, re.M)}
        if missing:
            time.sleep(0.05)
    assert not missing, f"not in the master's log: {missing}\n{cluster.log('master')[-4000:]}"


@pytest.mark.timeout(90)
def test_the_master_log_explains_a_job_that_loses_a_worker():
    shape = dict(combiner=wc_reducer, inputs=BOOKS3, num_reducers=3, split_size=32 * 1024)
    job = zmqmr.Job(slow_wc_mapper, wc_reducer, **shape)
    oracle = zmqmr.Job(wc_mapper, wc_reducer, **shape)  # the same job, without the sleeps
    with zmqmr.LocalCluster(workers=3, **FAST) as c:
        client = c.client()
        hosts = {w["pid"]: w["host"] for w in client.status()["workers"]}
        handle = client.submit(job)
        # SIGKILL a worker once the master has its first output (it wrote a second since).
        (n,) = wait_until(
            lambda: next(((i,) for i in range(3) if len(map_outputs(c, i, handle.job_id)) >= 2), 0),
            what="a worker with two finished map outputs",
        )
        pid = c.worker_pids[n]
        os.kill(pid, signal.SIGKILL)
        result = handle.wait(timeout=60)
        j, victim = re.escape(handle.job_id), re.escape(f"{hosts[pid]}:{pid}")
        joined = {
            f"joined {p}": rf"worker {re.escape(h)}:{p} joined with 1 slots: READY"
            for p, h in hosts.items()
        }
        assert_logged(
            c,
            {
                **joined,
                "accepted": rf"job {j} \(test_master_log.slow_wc_mapper .*\) accepted: "
                r"\d+ maps, 3 reduces",
                "started": rf"job {j} started",
                "gone": rf"worker {victim} is gone: \d+ running attempts and [1-9]\d* map "
                r"outputs lost: silent for \d+\.\ds",
                "again": rf"job {j}: map task \d+ will run again: its output was on worker "
                + victim,
                "succeeded": rf"job {j} succeeded after \d+\.\ds: every reduce task is done",
            },
        )
    assert list(result.items()) == list(zmqmr.run_serial(oracle).items())


@pytest.mark.timeout(60)
def test_the_master_log_explains_a_job_whose_mapper_keeps_failing():
    metamorphosis = [b for b in BOOKS if "metamorphosis" in b]
    job = zmqmr.Job(failing_mapper, wc_reducer, inputs=metamorphosis, max_attempts=2)
    with zmqmr.LocalCluster(workers=1, **FAST) as c:
        client = c.client()
        (worker,) = [f"{w['host']}:{w['pid']}" for w in client.status()["workers"]]
        handle = client.submit(job)
        with pytest.raises(zmqmr.JobFailed, match="no vermin in this job"):
            handle.wait(timeout=30)
        j, w = re.escape(handle.job_id), re.escape(worker)
        assert_logged(
            c,
            {
                "retried": rf"job {j}: map task \d+ will be retried: ValueError on {w}",
                "failed": rf"job {j} failed after \d+\.\ds: ValueError: map task \d+ failed 2 "
                r"times; last error: ValueError: no vermin in this job",
            },
        )


def test_a_master_run_in_a_thread_puts_the_collector_threshold_back():
    # the master loop runs under its own collector threshold; a program (or test)
    # that runs a Master in a thread gets its own back when the loop ends
    before = gc.get_threshold()
    master = Master("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", insecure=True)
    thread = threading.Thread(target=master.run)
    thread.start()
    try:
        wait_until(lambda: gc.get_threshold() != before, what="the master's threshold")
    finally:
        master.stop_event.set()
        thread.join(30)
    assert not thread.is_alive()
    assert gc.get_threshold() == before
