"""Which record the map side is on, in process and without sockets: the position a
map under skip_bad_records keeps (``track[1]``, the worker's last gasp), the index
an error is pinned on, and the records a split mapper is handed, for per-record
mappers and split mappers, on text splits and on in-memory records."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import zmqmr
from zmqmr import inputs, mapside
from zmqmr.mapside import RecordFailed

LINES = [f"w{i % 7} w{i % 3} line{i}" for i in range(3000)]


@pytest.fixture(params=["speedups", "pure"])
def counting_path(request, monkeypatch):
    if request.param == "pure":
        monkeypatch.setattr(mapside, "speedups", None)
    return request.param


@pytest.fixture
def text_split(tmp_path, monkeypatch):
    """A text file of LINES read in chunks of about 4 KiB (many batches), and its records
    as read directly."""
    monkeypatch.setattr(inputs, "READ_CHUNK", 4096)
    path = tmp_path / "lines.txt"
    data = "".join(line + "\n" for line in LINES).encode()
    path.write_bytes(data)
    records, offset = [], 0
    for line in LINES:
        records.append(((str(path), offset), line))
        offset += len(line) + 1
    desc = {"kind": "text", "path": str(path), "start": 0, "end": len(data)}
    return desc, records


def memory_split(records, batch=64):
    reader = inputs.SplitReader(iter(()), len(records))
    reader._batches = inputs._list_batches(reader, records, batch)
    return reader


def run(fn, reader, *, split=False, skip=(), track=None):
    counters: dict[str, int] = {}
    previous = zmqmr.userfn.counting(counters)
    try:
        loop = mapside.split_map_records if split else mapside.map_records
        buf, n_in, n_out = loop(
            fn,
            None,
            reader,
            set(skip),
            counters,
            lambda b: pytest.fail("nothing here spills"),
            spill_at=10_000_000,
            progress=lambda fraction: None,
            track=track,
        )
    finally:
        zmqmr.userfn.counting(previous)
    out = {k: list(vs) for k, vs in buf.items()}
    for k, v in buf.pairs:
        out.setdefault(k, []).append(v)
    return out, n_in, n_out, counters


def position():
    return memoryview(bytearray(16)).cast("q")


def test_a_split_mapper_gets_a_text_splits_records_with_their_byte_offsets(text_split):
    desc, records = text_split
    seen = []

    def keep(recs):
        for key, line in recs:
            seen.append((key, line))
            yield line.split()[0], 1

    out, n_in, n_out, _ = run(keep, inputs.read_split(desc), split=True)
    assert seen == records
    assert n_in == n_out == len(records)
    assert {k: len(vs) for k, vs in out.items()} == Counter(line.split()[0] for line in LINES)


@pytest.mark.parametrize("split", [False, True], ids=["mapper", "split_mapper"])
def test_the_position_is_the_record_being_mapped_while_it_is(counting_path, text_split, split):
    desc, records = text_split
    track = position()
    skip = {0, 5, 1000, 1001, 2999}
    wrong = []

    def per_record(key, line):
        index = records.index((key, line))
        if track[1] != index:
            wrong.append((index, track[1]))
        yield line.split()[0], 1
        if track[1] != index:  # still, while its generator is read
            wrong.append((index, track[1]))

    def per_split(recs):
        for key, line in recs:
            index = records.index((key, line))
            if track[1] != index:
                wrong.append((index, track[1]))
            yield line.split()[0], 1

    fn = per_split if split else per_record
    out, n_in, _, counters = run(fn, inputs.read_split(desc), split=split, skip=skip, track=track)
    assert wrong == []
    kept = [line for i, line in enumerate(LINES) if i not in skip]
    assert {k: len(vs) for k, vs in out.items()} == Counter(line.split()[0] for line in kept)
    assert n_in == len(kept) and counters["zmqmr.skipped_records"] == len(skip)


@pytest.mark.parametrize("split", [False, True], ids=["mapper", "split_mapper"])
@pytest.mark.parametrize("tracked", [False, True], ids=["untracked", "tracked"])
def test_a_failure_on_a_text_split_is_pinned_on_its_line(counting_path, text_split, split, tracked):
    desc, records = text_split
    bad = 2345
    track = position() if tracked else None

    def per_record(key, line):
        if line == LINES[bad]:
            raise ValueError("bad line")
        yield line.split()[0], 1

    def per_split(recs):
        counts: Counter = Counter()
        for _, line in recs:
            if line == LINES[bad]:
                raise ValueError("bad line")
            counts.update(line.split())
        return counts.items()

    with pytest.raises(RecordFailed) as info:
        run(per_split if split else per_record, inputs.read_split(desc), split=split, track=track)
    assert info.value.index == bad
    assert isinstance(info.value.__cause__, ValueError)
    if tracked:
        assert track[1] == bad


def test_a_split_mapper_skipping_records_of_memory_batches_is_exact_and_pinned(counting_path):
    records: list[tuple[Any, Any]] = [(i, f"a{i % 5} b{i % 2}") for i in range(1000)]
    skip = {3, 64, 65, 127, 128, 999}
    track = position()

    def count(recs):
        counts: Counter = Counter()
        for _, line in recs:
            counts.update(line.split())
        return counts.items()

    def checked(recs):
        for i, line in recs:
            assert i not in skip and track[1] == i
            yield i, line

    out, n_in, _, counters = run(
        lambda recs: count(checked(recs)), memory_split(records), split=True, skip=skip, track=track
    )
    job = zmqmr.Job(
        split_mapper=count,
        reducer=lambda k, vs: sum(vs),
        inputs=[r for i, r in enumerate(records) if i not in skip],
    )
    expected = dict(zmqmr.run_serial(job).items())
    assert {k: sum(vs) for k, vs in out.items()} == expected
    assert n_in == len(records) - len(skip) and counters["zmqmr.skipped_records"] == len(skip)

    def fails_after_a_skip(recs):
        for i, _ in recs:
            if i == 129:
                raise RuntimeError("here")
            yield i, 1

    with pytest.raises(RecordFailed) as info:
        run(fails_after_a_skip, memory_split(records), split=True, skip=skip, track=position())
    assert info.value.index == 129
