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
