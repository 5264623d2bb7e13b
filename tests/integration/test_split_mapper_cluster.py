"""Split mappers (in-mapper combining) on a real cluster, against run_serial and
answers computed here: text splits, skipped bad records, a failing job."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import WORD, count_words

import zmqmr
from zmqmr.errors import JobFailed

pytestmark = pytest.mark.timeout(180)


def split_wordcount(records):
    counts: Counter = Counter()
    for _key, line in records:
        counts.update(WORD.findall(line.lower()))
    return counts.items()


def add(_key, values):
    return sum(values)


def test_in_mapper_combining_on_text_splits_is_exact(books):
    job = zmqmr.Job(split_mapper=split_wordcount, reducer=add, inputs=books, num_reducers=3)
    job.split_size = 256 * 1024
    with zmqmr.LocalCluster(workers=2) as c:
        result = c.client().run(job, progress=False)
    assert list(result.items()) == list(zmqmr.run_serial(job).items())
    assert dict(result.items()) == count_words(books)
    assert result.stats["maps"] > len(books)


def poisoned(records):
    """Sums values per key; record 13 and record 77 crash it."""
    sums: Counter = Counter()
    for i, v in records:
        if i in (13, 77):
            raise ValueError(f"poisoned record {i}")
        sums[i % 4] += v
    return sums.items()


RECORDS = [(i, i) for i in range(200)]


def test_a_record_that_crashes_a_split_mapper_is_skipped():
    job = zmqmr.Job(
        split_mapper=poisoned, reducer=add, inputs=RECORDS, skip_bad_records=True, max_attempts=3
    )
    job.split_size = 512
    with zmqmr.LocalCluster(workers=2) as c:
        result = c.client().run(job, progress=False)
    expected: Counter = Counter()
    for i, v in RECORDS:
        if i not in (13, 77):
            expected[i % 4] += v
    assert dict(result.items()) == expected
    assert result.counters["zmqmr.skipped_records"] == result.stats["skipped_records"] == 2
    serial = zmqmr.run_serial(job)  # the oracle skips the records the cluster skips
    assert list(result.items()) == list(serial.items())
    assert result.counters == serial.counters


def test_without_skipping_the_job_fails_with_the_split_mappers_traceback():
    job = zmqmr.Job(split_mapper=poisoned, reducer=add, inputs=RECORDS, max_attempts=2)
    with zmqmr.LocalCluster(workers=2) as c, pytest.raises(JobFailed) as info:
        c.client().run(job, progress=False)
    err = info.value
    assert err.remote_type == "ValueError"
    assert err.remote_message in ("poisoned record 13", "poisoned record 77")
    assert "in poisoned" in err.remote_traceback  # the user's own frame
    assert 'raise ValueError(f"poisoned record {i}")' in err.remote_traceback
