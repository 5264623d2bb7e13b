"""run_serial keeps the cluster's contract: the same checks, messages, partitions and order."""

from __future__ import annotations

import dataclasses

import pytest

import zmqmr
from zmqmr import partitioning, userfn

RECORDS = [(i, f"w{i % 5} w{i % 3}") for i in range(60)]


def words(key, line):
    for w in line.split():
        yield w, 1


def total(key, counts):
    return sum(counts)


def yielding(key, counts):
    yield sum(counts)


def expected_counts():
    out: dict[str, int] = {}
    for _, line in RECORDS:
        for w in line.split():
            out[w] = out.get(w, 0) + 1
    return out


def test_a_generator_reducer_fails_with_the_shared_message():
    job = zmqmr.Job(words, yielding, [(0, "only only")], num_reducers=2)
    with pytest.raises(TypeError) as info:
        zmqmr.run_serial(job)
    with pytest.raises(TypeError) as direct:
        userfn.one_value("reducer", "only", yielding("only", iter([1])))
    assert str(info.value) == str(direct.value)
    assert str(info.value).startswith("reducer returned a generator for key 'only'")


def test_a_generator_combiner_fails_even_though_the_reducer_is_fine():
    job = zmqmr.Job(words, total, RECORDS, combiner=yielding)
    with pytest.raises(TypeError, match=r"^combiner returned a generator for key 'w\d'; it must"):
        zmqmr.run_serial(job)


def test_the_combiners_result_feeds_the_reducer_even_when_built_in_place():
    def as_list(key, line):
        for w in line.split():
            yield w, [1]

    def extend(key, lists):  # builds its result in its first input, as combiners may
        out = next(lists)
        for more in lists:
            out.extend(more)
        return out

    job = zmqmr.Job(as_list, lambda k, ls: len(extend(k, ls)), RECORDS, combiner=extend)
    assert zmqmr.run_serial(job).to_dict() == expected_counts()


def test_a_partitioner_out_of_range_fails_at_one_reducer_too():
    job = zmqmr.Job(words, total, RECORDS, num_reducers=1, partitioner=lambda k, n: 5)
    with pytest.raises(ValueError, match=r"partitioner returned 5 for key 'w\d'.*\[0, 1\)"):
        zmqmr.run_serial(job)


@dataclasses.dataclass(frozen=True, order=True)
class Word:
    text: str


def test_keys_of_user_types_come_out_in_the_executors_partitions():
    def mapper(key, line):
        for w in line.split():
            yield Word(w), 1

    result = zmqmr.run_serial(zmqmr.Job(mapper, total, RECORDS, num_reducers=3))
    items = list(result.items())
    assert {k.text: v for k, v in items} == expected_counts()
    with partitioning.seeded_hashing():
        part = partitioning.Partitioning(None, 3)
        parts = [part(k) for k, _ in items]
    assert parts == sorted(parts) and len(set(parts)) > 1
    for p in set(parts):
        keys = [k for (k, _), q in zip(items, parts) if q == p]
        assert keys == sorted(keys)


# -- skip_bad_records: the oracle skips what the cluster skips ------------------------


BAD = (7, 23, 41)


def flaky_words(key, line):
    """Counts each record it is called on; the BAD records fail after a pair and a count."""
    zmqmr.increment("calls")
    yield "all", 1
    if key in BAD:
        raise ValueError(f"bad record {key}")
    for w in line.split():
        yield w, 1


def counting_split_mapper(records):
    counts: dict[str, int] = {}
    for key, line in records:
        zmqmr.increment("read")
        if key in BAD:
            raise ValueError(f"bad record {key}")
        for w in ["all", *line.split()]:
            counts[w] = counts.get(w, 0) + 1
    return counts


def expected_without_bad() -> dict[str, int]:
    out: dict[str, int] = {}
    for key, line in RECORDS:
        if key not in BAD:
            for w in ["all", *line.split()]:
                out[w] = out.get(w, 0) + 1
    return out


@pytest.mark.parametrize("split_size", [None, 1, 64])
def test_records_the_mapper_fails_on_are_skipped_with_their_pairs_and_counters(split_size):
    job = zmqmr.Job(flaky_words, total, RECORDS, num_reducers=2, skip_bad_records=True)
    job.split_size = split_size
    result = zmqmr.run_serial(job)
    assert dict(result.items()) == expected_without_bad()
    good = len(RECORDS) - len(BAD)
    assert result.counters["zmqmr.skipped_records"] == len(BAD)
    assert result.counters["zmqmr.map_input_records"] == good
    # the failed calls' pairs ("all" of a bad record) and counts are dropped
    assert result.counters["calls"] == good
    assert result.counters["zmqmr.map_output_records"] == sum(expected_without_bad().values())


@pytest.mark.parametrize("split_size", [None, 1, 64])
def test_a_split_mapper_skips_the_record_it_was_reading_when_it_failed(split_size):
    job = zmqmr.Job(
        split_mapper=counting_split_mapper, reducer=total, inputs=RECORDS, skip_bad_records=True
    )
    job.split_size = split_size
    result = zmqmr.run_serial(job)
    assert dict(result.items()) == expected_without_bad()
    assert result.counters["zmqmr.skipped_records"] == len(BAD)
    assert result.counters["zmqmr.map_input_records"] == len(RECORDS) - len(BAD)
    assert result.counters["read"] == len(RECORDS) - len(BAD)  # of the attempts that succeeded


def test_a_record_that_fails_once_is_mapped_again_not_skipped():
    tries: dict[int, int] = {}

    def once(key, line):
        tries[key] = tries.get(key, 0) + 1
        if key in BAD and tries[key] == 1:
            raise ValueError("transient")
        yield "n", 1

    job = zmqmr.Job(once, total, RECORDS, skip_bad_records=True)
    result = zmqmr.run_serial(job)
    assert dict(result.items()) == {"n": len(RECORDS)}
    assert "zmqmr.skipped_records" not in result.counters
    assert all(tries[k] == 2 for k in BAD)


def test_without_skip_bad_records_the_mappers_error_is_raised():
    with pytest.raises(ValueError, match="bad record 7"):
        zmqmr.run_serial(zmqmr.Job(flaky_words, total, RECORDS))


def test_past_the_bad_records_a_task_may_skip_the_job_fails_saying_so(monkeypatch):
    from zmqmr import serial

    monkeypatch.setattr(serial, "MAX_BAD_RECORDS", 2)
    job = zmqmr.Job(flaky_words, total, RECORDS, skip_bad_records=True, split_size=1 << 30)
    with pytest.raises(zmqmr.JobFailed, match="more than the 2 bad records") as info:
        zmqmr.run_serial(job)
    assert info.value.remote_type == "ValueError"
    assert info.value.remote_message == "bad record 41"
    job = zmqmr.Job(split_mapper=counting_split_mapper, reducer=total, inputs=RECORDS)
    job.skip_bad_records, job.split_size = True, 1 << 30
    with pytest.raises(zmqmr.JobFailed, match="more than the 2 bad records"):
        zmqmr.run_serial(job)


def test_a_split_mapper_failing_before_its_first_record_raises_its_error():
    def broken(records):
        raise RuntimeError("no setup")

    job = zmqmr.Job(split_mapper=broken, reducer=total, inputs=RECORDS, skip_bad_records=True)
    with pytest.raises(RuntimeError, match="no setup"):
        zmqmr.run_serial(job)
