"""Counters at the wire's limits, on a LocalCluster of real processes: a job's total
may pass 64 bits; an attempt whose own counters do not fit fails saying why (its
worker is not dropped over and over); the cluster answers status after both."""

from __future__ import annotations

import pytest

import zmqmr

BIG = 2**62


@pytest.fixture(scope="module")
def cluster():
    with zmqmr.LocalCluster(workers=2, heartbeat_interval=0.2, worker_timeout=3) as c:
        yield c


def big_mapper(key, value):
    zmqmr.increment("big", BIG)
    yield key % 2, 1


def test_a_jobs_total_past_64_bits_is_exact_and_the_cluster_still_answers(cluster):
    job = zmqmr.Job(big_mapper, lambda k, vs: sum(vs), inputs=[(i, i) for i in range(8)])
    job.split_size = 1  # one record a task: each task's total fits, the job's is 2**65
    result = cluster.client(timeout=30).run(job, progress=False)
    assert result.counters["big"] == 8 * BIG == zmqmr.run_serial(job).counters["big"]
    assert dict(result.items()) == {0: 4, 1: 4}
    status = cluster.client().status()  # a status listing the job's counters decodes
    assert status["workers"]
    again = cluster.client(timeout=30).run(job, progress=False)
    assert again.counters["big"] == 8 * BIG


@pytest.mark.parametrize(
    ("increments", "says", "in_serial"),
    [  # run_serial counts a whole job in one dict: a task's limits are not its own
        ([("huge", 2**63)], "64 bits", False),
        ([("x" * 201, 1)], "1 to 200 characters", True),
        ([(f"n{i}", 1) for i in range(1000)], "at most 960 names", False),
    ],
    ids=["value", "long name", "many names"],
)
def test_an_attempt_whose_counters_cannot_be_reported_fails_the_job_saying_why(
    cluster, increments, says, in_serial
):
    def mapper(key, value):
        for name, n in increments:
            zmqmr.increment(name, n)
        yield key, value

    job = zmqmr.Job(mapper, lambda k, vs: sum(vs), inputs=[(1, 2)], max_attempts=2)
    with pytest.raises(zmqmr.JobFailed, match=says):
        cluster.client(timeout=30).run(job, progress=False)
    if in_serial:
        with pytest.raises(ValueError, match=says):  # the oracle says the same
            zmqmr.run_serial(job)
    else:
        assert zmqmr.run_serial(job).counters[increments[0][0]] == increments[0][1]
    status = cluster.client().status()
    assert len(status["workers"]) == 2  # no worker was dropped for a malformed DONE
    ok = zmqmr.Job(lambda k, v: [(k, v)], lambda k, vs: sum(vs), inputs=[(1, 2), (1, 3)])
    assert dict(cluster.client(timeout=30).run(ok, progress=False).items()) == {1: 5}
