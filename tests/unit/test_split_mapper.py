"""A split mapper (in-mapper combining), in process and without sockets: the map
side's ``split_map_records`` and ``run_serial`` against answers computed here."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import zmqmr
from zmqmr import inputs, mapside
from zmqmr.errors import JobSubmitError
from zmqmr.mapside import RecordFailed

RECORDS = [(i, f"w{i % 7} w{i % 3} w{i % 7}") for i in range(1000)]


@pytest.fixture(params=["speedups", "pure"])
def counting_path(request, monkeypatch):
    if request.param == "pure":
        monkeypatch.setattr(mapside, "speedups", None)
    return request.param


def split_side(split_mapper, records=RECORDS, batch=64, skip=(), spill_at=400_000, combiner=None):
    reader = inputs.SplitReader(iter(()), len(records))
    reader._batches = inputs._list_batches(reader, records, batch)
    counters: dict[str, int] = {}
    spills: list[dict[Any, list[Any]]] = []
    fractions: list[float] = []
    previous = zmqmr.userfn.counting(counters)
    try:
        buf, n_in, n_out = mapside.split_map_records(
            split_mapper,
            combiner,
            reader,
            set(skip),
            counters,
            lambda b: spills.append(groups_of(b)),
            spill_at=spill_at,
            progress=fractions.append,
        )
    finally:
        zmqmr.userfn.counting(previous)
    return groups_of(buf), n_in, n_out, counters, spills, fractions


def groups_of(buf: mapside.Buffer) -> dict[Any, list[Any]]:
    """The buffer as key -> values: its groups and the pairs it appended ungrouped."""
    out = {k: list(vs) for k, vs in buf.items()}
    for k, v in buf.pairs:
        out.setdefault(k, []).append(v)
    return out


def totals(*bufs) -> Counter:
    c: Counter = Counter()
    for buf in bufs:
        for k, vs in buf.items():
            c[k] += sum(vs)
    return c


def expected(records, skip=()) -> Counter:
    return Counter(w for i, (_, line) in enumerate(records) if i not in skip for w in line.split())


def in_mapper_count(records):
    counts: Counter = Counter()
    for _key, line in records:
        counts.update(line.split())
        zmqmr.increment("seen")
    yield from counts.items()


def per_word(records):
    for _key, line in records:
        for w in line.split():
            yield w, 1


@pytest.mark.parametrize("fn", [in_mapper_count, per_word])
def test_the_pairs_of_one_call_over_the_split_are_grouped(counting_path, fn):
    buf, n_in, n_out, counters, spills, fractions = split_side(fn)
    assert spills == []
    assert totals(buf) == expected(RECORDS)
    assert n_in == len(RECORDS)
    assert n_out == (7 + 3 if fn is in_mapper_count else 3 * len(RECORDS)) or fn is in_mapper_count
    if fn is in_mapper_count:
        assert len(buf) == len(expected(RECORDS)) and n_out == len(buf)
        assert counters["seen"] == len(RECORDS)
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_a_returned_dict_or_list_works_too(counting_path):
    def as_dict(records):
        return Counter(w for _, line in records for w in line.split())

    def as_list(records):
        return [(w, 1) for _, line in records for w in line.split()]

    for fn in (as_dict, as_list):
        buf, n_in, *_ = split_side(fn)
        assert totals(buf) == expected(RECORDS) and n_in == len(RECORDS)


def test_the_buffer_spills_while_the_split_mapper_runs(counting_path):
    # One pair per record, each a new key: the buffer passes spill_at many times.
    def distinct(records):
        for i, _line in records:
            yield f"k{i:05d}", 1

    records = [(i, "") for i in range(50_000)]
    buf, n_in, n_out, _, spills, _ = split_side(distinct, records, batch=1000, spill_at=10_000)
    assert len(spills) >= 2
    assert totals(buf, *spills) == Counter({f"k{i:05d}": 1 for i in range(50_000)})
    assert n_in == n_out == 50_000


def test_a_failure_is_pinned_on_the_record_being_read(counting_path):
    def fails_at_417(records):
        for i, _line in records:
            if i == 417:
                raise ValueError("bad record")
            yield i, 1

    with pytest.raises(RecordFailed) as info:
        split_side(fails_at_417)
    assert info.value.index == 417
    assert isinstance(info.value.__cause__, ValueError)


def test_a_bad_pair_is_pinned_on_the_record_being_read(counting_path):
    def bad_pair_at_300(records):
        for i, _line in records:
            yield (i, 1) if i != 300 else "not a pair"

    with pytest.raises(RecordFailed) as info:
        split_side(bad_pair_at_300)
    assert info.value.index == 300


def test_a_failure_before_the_first_record_is_not_pinned_on_a_record():
    def fails_at_setup(records):
        raise RuntimeError("no setup")
        yield  # pragma: no cover

    with pytest.raises(RuntimeError, match="no setup"):
        split_side(fails_at_setup)


def test_skipped_records_are_never_given_and_are_counted(counting_path):
    skip = {0, 5, 63, 64, 999}
    buf, n_in, _, counters, _, _ = split_side(in_mapper_count, skip=skip)
    assert totals(buf) == expected(RECORDS, skip)
    assert n_in == len(RECORDS) - len(skip)
    assert counters["zmqmr.skipped_records"] == len(skip)
    assert counters["seen"] == len(RECORDS) - len(skip)


def test_a_split_mapper_that_stops_early_counts_what_it_read():
    def first_ten(records):
        for n, (_i, line) in enumerate(records):
            if n == 10:
                break
            yield from ((w, 1) for w in line.split())

    buf, n_in, *_ = split_side(first_ten, batch=64)
    assert n_in == 11  # the eleventh was read, then the loop stopped
    assert totals(buf) == expected(RECORDS[:10])


def test_run_serial_calls_the_split_mapper_once_per_split():
    calls = []

    def counting(records):
        calls.append(1)
        return in_mapper_count(records)

    job = zmqmr.Job(split_mapper=counting, reducer=lambda k, vs: sum(vs), inputs=RECORDS)
    job.split_size = 4096
    result = zmqmr.run_serial(job)
    assert dict(result.items()) == expected(RECORDS)
    assert len(calls) == result.stats["maps"] > 1
    assert result.counters["zmqmr.map_input_records"] == len(RECORDS)


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        (dict(reducer=sum), "either a mapper or a split_mapper"),
        (dict(mapper=per_word, split_mapper=per_word, reducer=sum), "either a mapper"),
        (dict(split_mapper=42, reducer=sum), "split_mapper must be callable"),
        (dict(split_mapper=per_word), "reducer must be callable"),
    ],
)
def test_a_job_needs_exactly_one_kind_of_mapper(kwargs, problem):
    job = zmqmr.Job(inputs=RECORDS, **kwargs)
    with pytest.raises(JobSubmitError, match=problem):
        job.validate()


# -- a returned dict: its items are the pairs, of distinct keys --------------------------


def counter_of(records):
    counts: Counter = Counter()
    for _key, line in records:
        counts.update(line.split())
    return counts


@pytest.mark.parametrize("form", ["dict", "items", "counter"])
def test_a_returned_dict_s_items_are_taken_whole_as_distinct_pairs(counting_path, form):
    def fn(records):
        counts = counter_of(records)
        return {"dict": dict(counts), "items": counts.items(), "counter": counts}[form]

    calls = []
    buf, n_in, n_out, _, spills, _ = split_side(fn, combiner=lambda k, vs: calls.append(k))
    assert spills == [] and calls == []  # one value per key: nothing to combine
    assert totals(buf) == expected(RECORDS)
    assert n_in == len(RECORDS) and n_out == len(expected(RECORDS))


def test_a_returned_dict_larger_than_the_buffer_spills_once(counting_path):
    def fn(records):
        return {f"k{i:05d}": 1 for i, _line in records}

    records = [(i, "") for i in range(5_000)]
    buf, n_in, n_out, _, spills, _ = split_side(fn, records, batch=1000, spill_at=1_000)
    assert len(spills) == 1 and buf == {}
    assert totals(*spills) == Counter({f"k{i:05d}": 1 for i in range(5_000)})
    assert n_in == n_out == 5_000


def map_output(tmp_path, fn, lines, R=3, spill_records=400_000):
    """mapside.run_map of split mapper ``fn`` (with a summing combiner) over a file of
    ``lines``; each partition's groups, and the counters."""
    import os

    from zmqmr import layout, protocol, shuffle
    from zmqmr.config import WorkerSettings

    path = str(tmp_path / "in.txt")
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    data = str(tmp_path / "data")
    os.makedirs(layout.job_dir(data, "j"), exist_ok=True)
    fns = {"split_mapper": fn, "reducer": None, "combiner": lambda k, vs: sum(vs)}
    fns["partitioner"] = None
    split = protocol.Split("text", path, 0, os.path.getsize(path))
    spec = protocol.TaskSpec("j", R, 1, None, True, 0, split=split)
    counters: dict[str, int] = {}
    mapside.run_map(fns, "j", 0, 0, spec, None, counters, data_dir=data,
                    settings=WorkerSettings(spill_records=spill_records),
                    progress=lambda fraction: None)  # fmt: skip
    out = layout.map_output_path(data, "j", 0, 0)
    parts = [[(k, list(vs)) for k, vs in shuffle.local_segment(out, r).groups()] for r in range(R)]
    return parts, counters


@pytest.mark.parametrize("spill_records", [400_000, 4])
def test_a_returned_counter_makes_sorted_partitions_of_one_value_per_key(
    tmp_path, counting_path, spill_records
):
    lines = [line for _, line in RECORDS] + ["zz w1", "a b c a"]
    parts, counters = map_output(tmp_path, counter_of, lines, spill_records=spill_records)
    want = Counter(w for line in lines for w in line.split())
    got: Counter = Counter()
    part = zmqmr.userfn.checked_partitioner(None, 3)
    for r, groups in enumerate(parts):
        keys = [k for k, _ in groups]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        for k, vs in groups:
            assert part(k) == r
            got[k] += sum(vs)
    assert got == want
    assert counters["zmqmr.map_input_records"] == len(lines)
    assert counters["zmqmr.map_output_records"] == len(want)
    assert (mapside.merge.SPILLED in counters) == (spill_records < len(want))
