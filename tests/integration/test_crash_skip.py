"""skip_bad_records for records that kill the executor (os._exit, SIGSEGV), with real processes.

The executor leaves the index of the record it maps where its worker reads it
after the death; the crash is pinned on that record like an exception, and a
record that killed two attempts is skipped by the next.
"""

from __future__ import annotations

import os
import signal

import pytest
from conftest import wc_reducer

import zmqmr

FAST = dict(heartbeat_interval=0.2, worker_timeout=3.0, reconnect_initial=0.2, reconnect_max=1.0)
BAD = 137


def exiting_mapper(key, value):
    if value == BAD:
        os._exit(3)
    yield value % 5, value


def segfaulting_mapper(key, value):
    if value == BAD:
        os.kill(os.getpid(), signal.SIGSEGV)
    yield value % 5, value


def generator_segfaulting_mapper(key, value):
    yield value % 5, value  # the crash comes while the generator is read, not at the call
    if value == BAD:
        os.kill(os.getpid(), signal.SIGSEGV)


RECORDS = [(f"r{i}", i) for i in range(400)]


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "mapper", [exiting_mapper, segfaulting_mapper, generator_segfaulting_mapper]
)
def test_a_record_that_kills_the_executor_twice_is_skipped(mapper):
    job = zmqmr.Job(
        mapper, wc_reducer, inputs=RECORDS, num_reducers=2, skip_bad_records=True, max_attempts=4
    )
    with zmqmr.LocalCluster(workers=2, **FAST) as c:
        result = c.client().run(job)
    without = zmqmr.Job(
        mapper, wc_reducer, inputs=[r for r in RECORDS if r[1] != BAD], num_reducers=2
    )
    assert list(result.items()) == list(zmqmr.run_serial(without).items())
    expected: dict[int, int] = {}
    for _, i in RECORDS:
        if i != BAD:
            expected[i % 5] = expected.get(i % 5, 0) + i
    assert dict(result.items()) == expected
    assert result.counters["zmqmr.skipped_records"] == 1
    assert result.counters["zmqmr.map_input_records"] == len(RECORDS) - 1
    assert result.stats["failed_attempts"] == 2


@pytest.mark.timeout(240)
def test_without_skip_bad_records_a_killing_record_fails_the_job_saying_why():
    job = zmqmr.Job(segfaulting_mapper, wc_reducer, inputs=RECORDS, max_attempts=2)
    with zmqmr.LocalCluster(workers=1, **FAST) as c, pytest.raises(zmqmr.JobFailed) as info:
        c.client().run(job)
    message = str(info.value)
    assert "ExecutorDied" in message and "SIGSEGV" in message and "failed 2 times" in message
