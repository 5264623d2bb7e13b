"""The sort-shaped data path: flat pairs on the map side, batched reduces, range cuts.

A job whose pairs do not repeat takes shortcuts: its map output is written as
flat ``(keys, values)`` parts without groups, a ``RangePartitioner`` cuts one
sorted list instead of being called per pair, and reduces call the reducer
through ``map`` over batches of distinct keys. Each shortcut must give what
the slow path gives: these tests run whole jobs through the executor's own
map and reduce code (in this process, no sockets) and compare the part files
and results with ``run_serial``, on data with repeated keys, hot keys that
span blocks and batches, empty partitions, and keys the shortcuts must not take.
"""

from __future__ import annotations

import itertools
import os
import random
from typing import Any

import pytest

import zmqmr
from zmqmr import (
    layout,
    mapoutput,
    mapside,
    outputreader,
    partitioning,
    protocol,
    reduceside,
    shuffle,
    userfn,
)
from zmqmr.config import WorkerSettings
from zmqmr.job import functions, make_splits, prepare

ADDRESS = "tcp://127.0.0.1:1"  # the reduce's own shuffle address: every segment is local


class _NoConn:
    """A reduce whose segments are all local never talks to its worker."""

    def send(self, msg: Any) -> None:
        raise AssertionError(f"unexpected message {msg!r}")

    def recv(self) -> Any:
        raise AssertionError("unexpected recv")


def run_job(tmp_path, job: zmqmr.Job, settings: WorkerSettings | None = None):
    """``job`` through mapside.run_map and ReduceSide.run_reduce, in this process.

    Returns the part files' text, the results the reduces sent back (in
    partition order), and the reduces' counters summed.
    """
    settings = settings or WorkerSettings()
    data = str(tmp_path / "data")
    out = str(tmp_path / "out")
    os.makedirs(layout.job_dir(data, "j"), exist_ok=True)
    os.makedirs(os.path.join(out, "_temporary", "j"), exist_ok=True)
    fns = functions(job)
    descs, blobs = make_splits(job)
    R = job.num_reducers
    reports = []
    for m, desc in enumerate(descs):
        split = protocol.Split.from_json({k: v for k, v in desc.items()})
        blob = blobs[desc["blob"]] if desc["kind"] == "records" else None
        spec = protocol.TaskSpec("j", R, len(descs), None, job.combiner is not None, 0, split=split)
        reports.append(
            mapside.run_map(
                fns,
                "j",
                m,
                0,
                spec,
                blob,
                {},
                data_dir=data,
                settings=settings,
                progress=lambda fraction: None,
            )  # fmt: skip
        )
    reader = outputreader.OutputReader()
    side = reduceside.ReduceSide(
        _NoConn(), data, ADDRESS, settings, None, reader, lambda fraction: None
    )
    try:
        return _reduce_all(side, fns, reports, R, len(descs), out)
    finally:
        reader.forget()


def _reduce_all(side, fns, reports, R, M, out):
    texts, results = [], []
    counters: dict[str, int] = {}
    for p in range(R):
        locations = [
            protocol.Location(m, 0, ADDRESS, s.size, s.groups)
            for m, rep in enumerate(reports)
            for s in rep.segments
            if s.partition == p
        ]
        spec = protocol.TaskSpec("j", R, M, out, False, 1 << 30, partition=p,
                                 locations=locations)  # fmt: skip
        got: dict[str, int] = {}
        report, blob = side.run_reduce(fns, "j", p, 0, spec, got)
        for k, n in got.items():
            counters[k] = counters.get(k, 0) + n
        assert blob is not None
        results.append(list(mapoutput.segment_groups(blob)))
        with open(layout.attempt_part_path(out, "j", p, 0), encoding="utf-8") as f:
            texts.append(f.read())
    return texts, results, counters


def serial_answer(job: zmqmr.Job):
    """run_serial's results per partition, and the part files they make."""
    result = zmqmr.run_serial(job)
    parts: list[list[tuple[Any, Any]]] = []
    for load in result._partitions or []:
        parts.append(list(load()))
    return ["".join(f"{k}\t{v}\n" for k, v in p) for p in parts], parts, result.counters


def check_against_serial(tmp_path, job, settings=None):
    texts, results, counters = run_job(tmp_path, job, settings)
    want_texts, want_results, want_counters = serial_answer(job)
    assert texts == want_texts
    assert results == want_results
    assert counters["zmqmr.reduce_input_groups"] == want_counters["zmqmr.reduce_input_groups"]
    assert counters["zmqmr.reduce_output_records"] == want_counters["zmqmr.reduce_output_records"]
    return texts


ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def sort_records(n: int, seed: int = 1, repeats: int = 0, hot: int = 0) -> list[tuple[int, str]]:
    """``n`` records ``key|payload`` with distinct random keys, plus ``repeats`` records
    that repeat earlier keys and ``hot`` records of one key."""
    rng = random.Random(seed)
    keys = ["".join(rng.choices(ALPHABET, k=8)) for _ in range(n)]
    lines = [f"{k}|{i}" for i, k in enumerate(keys)]
    lines += [f"{rng.choice(keys)}|r{i}" for i in range(repeats)]
    lines += [f"HOTKEY00|h{i}" for i in range(hot)]
    rng.shuffle(lines)
    return list(enumerate(lines))


def split_line(_: Any, line: str) -> Any:
    key, value = line.split("|")
    return ((key, value),)


def first_value(_: Any, values: Any) -> Any:
    return next(values)


def all_values(_: Any, values: Any) -> Any:
    return ",".join(values)


BOUNDS = ["G", "Q", "g", "q"]


def range_fn(key: Any, n: int) -> int:
    """The partitions ``RangePartitioner(BOUNDS)`` gives, as a user's function."""
    return sum(b <= key for b in BOUNDS)


N = 6 * mapside.PROBE_PAIRS
#: Three map tasks of N records: each past the probe, so its pairs go the flat way.
SPLIT = 400_000


@pytest.mark.parametrize(
    "partitioner", [zmqmr.RangePartitioner(BOUNDS), range_fn, None], ids=["range", "fn", "hash"]
)
def test_a_sort_gives_run_serials_part_files_and_results(tmp_path, monkeypatch, partitioner):
    job = zmqmr.Job(split_line, first_value, sort_records(N), num_reducers=5,
                    partitioner=partitioner, split_size=SPLIT)  # fmt: skip
    calls = {"write_pairs": 0, "range": 0, "reduce_groups": 0}

    def spy(owner, name):
        real = getattr(owner, name)

        def counted(*args, **kwargs):
            calls[name if name in calls else "range"] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    spy(mapoutput.MapOutputWriter, "write_pairs")
    spy(zmqmr.RangePartitioner, "__call__")
    spy(userfn, "reduce_groups")
    texts, _, _ = run_job(tmp_path, job)
    # The shortcuts were taken: flat segments, no call of the range partitioner per
    # pair, and reduce_groups only for each reduce's last key (it may go on).
    assert calls["write_pairs"] == 5 * len(make_splits(job)[0])
    assert calls["range"] == 0
    assert calls["reduce_groups"] <= 5
    monkeypatch.undo()
    assert texts == check_against_serial(tmp_path / "again", job)
    assert sum(t.count("\n") for t in texts) == N


def test_a_range_partitioner_and_the_same_function_give_identical_bytes(tmp_path):
    records = sort_records(N, repeats=500, hot=3000)
    by_range = run_job(tmp_path / "a", zmqmr.Job(split_line, all_values, records, num_reducers=5,
                       partitioner=zmqmr.RangePartitioner(BOUNDS), split_size=SPLIT))  # fmt: skip
    by_fn = run_job(tmp_path / "b", zmqmr.Job(split_line, all_values, records, num_reducers=5,
                    partitioner=range_fn, split_size=SPLIT))  # fmt: skip
    assert by_range == by_fn
    texts = by_range[0]
    assert "".join(texts).splitlines() == sorted("".join(texts).splitlines())  # a total order


SETTINGS = {
    "default": WorkerSettings(),
    # spilled runs merged on the map side, and reduces merging from disk in passes
    "spill-and-merge": WorkerSettings(spill_records=5000, reduce_memory=1 << 20, merge_fanin=2),
}


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_repeated_and_hot_keys_keep_every_value_in_run_serials_order(tmp_path, settings):
    records = sort_records(N, repeats=2000, hot=40_000)  # the hot key spans blocks and batches
    job = zmqmr.Job(split_line, all_values, records, num_reducers=5,
                    partitioner=zmqmr.RangePartitioner(BOUNDS), split_size=SPLIT)  # fmt: skip
    check_against_serial(tmp_path, job, settings)


def test_empty_partitions_give_empty_part_files(tmp_path):
    # Every key starts with a digit: partitions 1..4 of BOUNDS get nothing.
    records = [(i, f"{i:07d}|v{i}") for i in range(N)]
    job = zmqmr.Job(split_line, first_value, records, num_reducers=5,
                    partitioner=zmqmr.RangePartitioner(BOUNDS), split_size=SPLIT)  # fmt: skip
    texts = check_against_serial(tmp_path, job)
    assert texts[0].count("\n") == N and texts[1:] == ["", "", "", ""]


def int_pairs(_: Any, line: str) -> Any:
    key, value = line.split("|")
    return ((int(key, 36), value),)


def tuple_pairs(_: Any, line: str) -> Any:
    key, value = line.split("|")
    return (((key[0], key), value),)


def frozenset_pairs(_: Any, line: str) -> Any:
    # One element per set: its str does not depend on how the set was built.
    key, value = line.split("|")
    return (((frozenset(key[0]), key[1]), value),)


@pytest.mark.parametrize(
    ("mapper", "partitioner"),
    [
        (int_pairs, zmqmr.RangePartitioner([36**7, 20 * 36**7])),
        (tuple_pairs, zmqmr.RangePartitioner([("G",), ("g",)])),
        (frozenset_pairs, None),
    ],
    ids=["int", "tuple", "frozenset"],
)
def test_keys_of_other_types_give_run_serials_answer(tmp_path, mapper, partitioner):
    records = sort_records(N, repeats=300)
    job = zmqmr.Job(mapper, all_values, records, num_reducers=3, partitioner=partitioner,
                    split_size=SPLIT)  # fmt: skip
    check_against_serial(tmp_path, job)


def test_a_range_cut_applies_only_to_keys_that_order_by_lt(monkeypatch):
    part = userfn.checked_partitioner(zmqmr.RangePartitioner(["m"]), 2)
    items = [("z", 1), ("a", 2), ("m", 3)]
    assert part.split_sorted(items) == [[("a", 2)], [("m", 3), ("z", 1)]]
    assert part.split_sorted([(("a",), 1)]) is None  # tuples may hold frozensets
    assert userfn.checked_partitioner(range_fn, 2).split_sorted(items) is None  # unknown order


def test_range_partitioner_puts_a_boundary_in_the_partition_it_starts():
    p = zmqmr.RangePartitioner(["b", "d"])
    assert [p(k, 3) for k in ["a", "b", "c", "d", "e", ""]] == [0, 1, 1, 2, 2, 0]
    items = sorted((k, None) for k in ["a", "b", "c", "d", "e", ""])
    cut = p.cut(items, 3)
    assert [[k for k, _ in c] for c in cut] == [["", "a"], ["b", "c"], ["d", "e"]]


def test_range_partitioner_refuses_a_wrong_r_and_unordered_boundaries():
    with pytest.raises(ValueError, match="num_reducers=4"):
        zmqmr.RangePartitioner(["b", "d"])("a", 4)
    with pytest.raises(ValueError, match="num_reducers=2"):
        zmqmr.RangePartitioner(["b", "d"]).cut([], 2)
    with pytest.raises(ValueError, match="strictly increasing"):
        zmqmr.RangePartitioner(["d", "b"])
    with pytest.raises(TypeError, match="orderable"):
        zmqmr.RangePartitioner(["b", 1])
    assert partitioning.RangePartitioner([1, 2]) == zmqmr.RangePartitioner([1, 2])


def test_a_wrong_r_fails_the_map_with_the_partitioners_message(tmp_path):
    job = zmqmr.Job(split_line, first_value, sort_records(N), num_reducers=3,
                    partitioner=zmqmr.RangePartitioner(BOUNDS), split_size=SPLIT)  # fmt: skip
    with pytest.raises(ValueError, match="num_reducers=3"):
        run_job(tmp_path, job)


@pytest.mark.parametrize("reducers", [1, len(BOUNDS), len(BOUNDS) + 2])
def test_a_range_partitioner_for_another_r_is_refused_at_submit(reducers):
    job = zmqmr.Job(split_line, first_value, sort_records(N), num_reducers=reducers,
                    partitioner=zmqmr.RangePartitioner(BOUNDS))  # fmt: skip
    message = f"{len(BOUNDS)} boundaries cuts keys into {len(BOUNDS) + 1} partitions"
    with pytest.raises(zmqmr.JobSubmitError, match=message):
        job.validate()
    with pytest.raises(zmqmr.JobSubmitError, match=f"num_reducers={reducers}"):
        prepare(job)  # what client.submit sends: refused before the master hears of it
    job.num_reducers = len(BOUNDS) + 1
    job.validate()


def generator_reducer(key: Any, values: Any) -> Any:
    yield from values


def test_a_reducer_that_returns_a_generator_fails_with_run_serials_message(tmp_path):
    job = zmqmr.Job(split_line, generator_reducer, sort_records(N), num_reducers=2,
                    partitioner=zmqmr.RangePartitioner(["a"]), split_size=SPLIT)  # fmt: skip
    with pytest.raises(TypeError, match="use return, not yield") as serial:
        zmqmr.run_serial(job)
    with pytest.raises(TypeError, match="use return, not yield") as cluster:
        run_job(tmp_path, job)
    assert str(cluster.value) == str(serial.value)


def test_reduce_batches_hand_each_key_to_the_reducer_once_with_all_its_values():
    # Batches cut inside a key's runs, keys repeating within batches, and distinct ones.
    groups = [("a", [1]), ("b", [2]), ("b", [3]), ("c", [4]), ("d", [5]), ("d", [6]), ("e", [7])]
    calls: list[tuple[str, list[int]]] = []

    def reducer(key, values):
        calls.append((key, list(values)))
        return len(calls)

    for cuts in [(1, 2, 5), (3,), (2, 4, 6), ()]:
        calls.clear()
        bounds = [0, *cuts, len(groups)]
        batches = [groups[a:b] for a, b in zip(bounds, bounds[1:])]
        counters: dict[str, int] = {}
        out = list(userfn.reduce_batches(reducer, batches, counters))
        keys = [k for ks, _ in out for k in ks]
        values = [v for _, vs in out for v in vs]
        assert calls == [("a", [1]), ("b", [2, 3]), ("c", [4]), ("d", [5, 6]), ("e", [7])]
        assert keys == ["a", "b", "c", "d", "e"] and values == [1, 2, 3, 4, 5]
        assert counters["zmqmr.reduce_input_groups"] == 5


class _CountedKey(str):
    """A str key that counts the comparisons made with ``==``."""

    eqs = 0

    def __eq__(self, other):
        _CountedKey.eqs += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_reduce_batches_compare_each_key_about_once():
    # Distinct keys in batches of 100: the checks for repeats and for a key going on
    # into the next batch cost about one == per key, not one per key and batch.
    batches = [[(_CountedKey(f"k{b:03d}{i:03d}"), [i]) for i in range(100)] for b in range(50)]
    _CountedKey.eqs = 0
    out = list(userfn.reduce_batches(lambda k, vs: next(vs), iter(batches), {}))
    assert [v for _, vs in out for v in vs] == [i for _ in range(50) for i in range(100)]
    assert _CountedKey.eqs <= 5000 + 3 * 50


def test_flat_parts_decode_as_one_value_groups_and_repeated_keys_as_joined_groups():
    pairs = [(f"k{i:05d}", f"v{i}") for i in range(20_000)] + [("zz", "a"), ("zz", "b")]
    counted = mapoutput._Counted(())
    blocks = list(mapoutput.encode_pairs(pairs, target=64 << 10, counted=counted))
    data = b"".join(b"".join(block) for block in blocks)
    assert len(list(mapoutput.iter_blocks(data))) >= 2  # cut by bytes
    groups = list(mapoutput.segment_groups(data))
    first = mapoutput.PAIRS_PART  # the first part: distinct keys, flat
    assert groups[:first] == [(k, (v,)) for k, v in pairs[:first]]
    assert groups[-1] == ("zz", ["a", "b"])  # in the part where keys repeat: joined
    assert [(k, v) for k, vs in groups for v in vs] == pairs
    assert counted.n == len(groups) == 20_001


def test_pairs_written_consumed_give_the_same_bytes_and_are_freed_as_they_go():
    import weakref

    class Value(str):  # a str that a weak reference can follow
        pass

    pairs = [(f"k{i:05d}", Value(f"v{i}")) for i in range(3 * mapoutput.PAIRS_PART)]
    pairs += [("zz", Value("a")), ("zz", Value("b"))]
    want = b"".join(b"".join(block) for block in mapoutput.encode_pairs(list(pairs)))
    refs = [weakref.ref(v) for _, v in pairs]
    given = pairs
    del pairs
    blocks = mapoutput.encode_pairs(given, target=16 << 10, consume=True)
    first = next(blocks)
    alive = sum(r() is not None for r in refs)
    assert 0 < alive < len(refs)  # the parts encoded so far are freed, the rest held
    assert given[0] is None and given[-1] is not None
    rest = [first, *blocks]
    assert given == [None] * len(refs)
    assert all(r() is None for r in refs)
    data = b"".join(b"".join(block) for block in rest)
    # cut into other blocks (target), the same parts and groups
    assert list(mapoutput.segment_groups(data)) == list(mapoutput.segment_groups(want))


def test_a_hot_key_written_as_pairs_keeps_its_values_in_order_across_parts():
    pairs = [("a", 0)] + [("hot", i) for i in range(3 * mapoutput.PAIRS_PART + 5)] + [("z", 1)]
    data = b"".join(b"".join(block) for block in mapoutput.encode_pairs(pairs, target=16 << 10))
    groups = list(mapoutput.segment_groups(data))
    assert [k for k, _ in groups] == sorted(k for k, _ in groups)  # consecutive runs
    assert [(k, v) for k, vs in groups for v in vs] == pairs
    assert max(len(vs) for _, vs in groups) <= mapoutput.PAIRS_PART


def test_a_key_spanning_batches_streams_to_one_reducer_call():
    # "hot" runs through batches 0-3; each batch is pulled only as its values are read.
    batches = [
        [("a", [0]), ("hot", [1])],
        [("hot", [2]), ("hot", [3])],
        [("hot", [4])],
        [("hot", [5]), ("z", [6])],
    ]
    pulled: list[int] = []

    def stream():
        for i, b in enumerate(batches):
            pulled.append(i)
            yield list(b)

    seen: list[tuple[str, int, list[int]]] = []

    def reducer(key, values):
        first = next(values)
        seen.append((key, first, list(pulled)))
        return [first, *values]

    out = list(userfn.reduce_batches(reducer, stream(), {}))
    assert seen == [("a", 0, [0]), ("hot", 1, [0]), ("z", 6, [0, 1, 2, 3])]
    assert out == [(["a"], [[0]]), (["hot"], [[1, 2, 3, 4, 5]]), (["z"], [[6]])]


@pytest.mark.parametrize("reads", [0, 1, 3])
def test_a_reducer_that_stops_reading_a_hot_key_leaves_the_next_keys_whole(reads):
    batches = [[("a", [1]), ("h", [1])], [("h", [2])] * 3, [("h", [3]), ("k", [4]), ("m", [5])]]

    def reducer(key, values):
        return list(itertools.islice(values, reads if key == "h" else 99))

    counters: dict[str, int] = {}
    out = list(userfn.reduce_batches(reducer, iter(batches), counters))
    keys = [k for ks, _ in out for k in ks]
    values = [v for _, vs in out for v in vs]
    assert keys == ["a", "h", "k", "m"]
    assert values == [[1], [1, 2, 2, 2, 3][:reads], [4], [5]]
    assert counters["zmqmr.reduce_input_groups"] == 4


def test_a_partition_merged_from_streams_reads_this_workers_segments_in_place(
    tmp_path, monkeypatch
):
    # Past min(HASH_GROUP_BYTES, reduce_memory) a reduce merges streams: its own
    # worker's segments are then read where they lie, copied nowhere.
    in_place: list[bool] = []
    real = shuffle.local_segment

    def spy(path, partition, reader=None, in_place_=False):
        in_place.append(in_place_)
        return real(path, partition, reader, in_place_)

    monkeypatch.setattr(shuffle, "local_segment", spy)
    job = zmqmr.Job(split_line, first_value, sort_records(N), num_reducers=2,
                    partitioner=zmqmr.RangePartitioner(["a"]), split_size=SPLIT)  # fmt: skip
    settings = WorkerSettings(reduce_memory=256 << 10)
    texts, _, _ = run_job(tmp_path, job, settings)
    maps = len(make_splits(job)[0])
    assert in_place == [True] * (2 * maps)  # every segment is this worker's here
    monkeypatch.undo()
    assert texts == serial_answer(job)[0]
