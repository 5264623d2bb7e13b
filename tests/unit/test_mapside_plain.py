"""The map side's plain path: pairs that stop repeating are appended, not counted.

A sort's pairs never repeat; after PROBE_PAIRS counted pairs the grouper
appends them as they come and groups them only when partitions are sorted.
What comes out must be what the counting path gives: every pair once, equal
keys in one group, combined where there is a combiner, errors on their record.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import pytest

from zmqmr import inputs, layout, mapside, protocol, shuffle
from zmqmr.config import WorkerSettings
from zmqmr.mapside import RecordFailed
from zmqmr.partitioning import Partitioning

N = 3 * mapside.PROBE_PAIRS  # records: the switch happens a third of the way in


def map_records(mapper, records, combiner=None, spill_at=1_000_000):
    reader = inputs.SplitReader(iter(()), len(records))
    reader._batches = inputs._list_batches(reader, records, 1000)
    spills: list[tuple[dict[Any, list[Any]], list[Any]]] = []
    buf, n_in, n_out = mapside.map_records(
        mapper,
        combiner,
        reader,
        set(),
        {},
        lambda b: spills.append((dict(b), list(b.pairs))),
        spill_at=spill_at,
        progress=lambda fraction: None,
    )
    return buf, n_in, n_out, spills


def test_pairs_that_do_not_repeat_are_appended_once_each_and_the_mapper_called_once():
    calls: list[int] = []

    def mapper(k, v):
        calls.append(k)
        return ((f"k{(k * 7919) % N:06d}", v),)

    buf, n_in, n_out, _ = map_records(mapper, [(i, f"v{i}") for i in range(N)])
    assert calls == list(range(N))
    assert len(buf.pairs) >= N - mapside.PROBE_PAIRS - mapside.PAIRS_CHUNK  # appended
    got = sorted([*buf.pairs, *((k, v) for k, vs in buf.items() for v in vs)])
    assert got == sorted((f"k{(i * 7919) % N:06d}", f"v{i}") for i in range(N))
    assert n_in == n_out == N


def test_a_repeating_job_keeps_counting():
    buf, _, _, _ = map_records(lambda k, v: ((k % 100, "x"),), [(i, i) for i in range(N)])
    assert not buf.pairs and sorted(buf) == list(range(100))


def run_map(tmp_path, lines: list[str], mapper, combiner=None, R=3, spill_records=400_000):
    """mapside.run_map over a text file of ``lines``; each partition's groups."""
    path = str(tmp_path / "in.txt")
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    data = str(tmp_path / "data")
    os.makedirs(layout.job_dir(data, "j"), exist_ok=True)
    fns = {"mapper": mapper, "reducer": None, "combiner": combiner}
    fns["partitioner"] = lambda key, n: len(key) % n
    split = protocol.Split("text", path, 0, os.path.getsize(path))
    spec = protocol.TaskSpec("j", R, 1, None, combiner is not None, 0, split=split)
    settings = WorkerSettings(spill_records=spill_records)
    mapside.run_map(fns, "j", 0, 0, spec, None, {}, data_dir=data, settings=settings,
                    progress=lambda fraction: None)  # fmt: skip
    out = layout.map_output_path(data, "j", 0, 0)
    return [[(k, list(vs)) for k, vs in shuffle.local_segment(out, r).groups()] for r in range(R)]


def expected(lines: list[str], pair, R=3, combine=None) -> list[list[tuple[str, list[Any]]]]:
    groups: dict[str, list[Any]] = defaultdict(list)
    for line in lines:
        k, v = pair(line)
        groups[k].append(v)
    parts: list[list[tuple[str, list[Any]]]] = [[] for _ in range(R)]
    for k in sorted(groups):
        parts[len(k) % R].append((k, groups[k]))
    return parts


def canonical(parts, combine=None):
    """Groups with equal adjacent keys joined and values in a set order (or combined)."""
    out = []
    for groups in parts:
        joined: dict[str, list[Any]] = {}
        keys = [k for k, _ in groups]
        assert keys == sorted(keys), "a partition is not sorted by key"
        for k, vs in groups:
            joined.setdefault(k, []).extend(vs)
        out.append([(k, combine(vs) if combine else sorted(vs)) for k, vs in joined.items()])
    return out


LINES = [f"{(i * 7919) % 100_003:x}-{i}" for i in range(N)]


def sort_pair(line: str) -> tuple[str, str]:
    return line.split("-")[0], line


@pytest.mark.parametrize("spill_records", [400_000, 5000])
def test_a_sort_shaped_map_output_is_sorted_and_holds_every_record(
    tmp_path, monkeypatch, spill_records
):
    appended: list[int] = []
    real = mapside._Grouper._append_pairs

    def append(self, chunk):
        appended.append(len(chunk))
        return real(self, chunk)

    monkeypatch.setattr(mapside._Grouper, "_append_pairs", append)
    parts = run_map(
        tmp_path, LINES, lambda k, line: (sort_pair(line),), spill_records=spill_records
    )
    assert canonical(parts) == canonical(expected(LINES, sort_pair))
    assert sum(len(vs) for p in parts for _, vs in p) == N
    assert sum(appended) > N // 2, "the plain path was not taken"


def test_keys_that_repeat_after_the_switch_are_joined_and_combined(tmp_path):
    # Unique keys during the probe, then every key seen three more times.
    head = mapside.PROBE_PAIRS + mapside.PAIRS_CHUNK
    lines = [f"u{i}" for i in range(head)] + [f"r{i % 500}" for i in range(1500)]
    lines += [f"u{i}" for i in range(0, head, 7)]

    def pair(line: str) -> tuple[str, int]:
        return line, len(line)

    parts = run_map(tmp_path, lines, lambda k, line: [pair(line)], combiner=lambda k, vs: sum(vs))
    assert canonical(parts, sum) == canonical(expected(lines, pair), sum)
    for groups in parts:  # joined with the combiner: one value per key
        assert all(len(vs) == 1 for _, vs in groups)


def test_a_bad_pair_after_the_switch_is_pinned_on_its_record():
    bad = 2 * mapside.PROBE_PAIRS + 17

    def mapper(k, v):
        return ((f"k{k}", v),) if k != bad else ((f"k{k}",),)

    with pytest.raises(RecordFailed) as info:
        map_records(mapper, [(i, i) for i in range(N)])
    assert info.value.index == bad


def test_an_unhashable_key_after_the_switch_is_pinned_on_its_record():
    bad = 2 * mapside.PROBE_PAIRS + 5

    def mapper(k, v):
        return ((f"k{k}" if k != bad else [k], v),)

    with pytest.raises(RecordFailed) as info:
        map_records(mapper, [(i, i) for i in range(N)])
    assert info.value.index == bad


def test_the_plain_buffer_spills_past_its_budget():
    buf, _, _, spills = map_records(lambda k, v: ((k, v),), [(i, -i) for i in range(N)],
                                    spill_at=5000)  # fmt: skip
    assert len(spills) >= 3 and sum(len(pairs) for _, pairs in spills) > N // 2
    got = [kv for d, pairs in [*spills, (dict(buf), buf.pairs)] for kv in pairs]
    got += [(k, v) for d, _ in [*spills, (dict(buf), [])] for k, vs in d.items() for v in vs]
    assert sorted(got) == [(i, -i) for i in range(N)]


@pytest.mark.parametrize("R", [3, 20])
def test_a_user_partitioner_splits_every_item_to_its_answer(R):
    items = [(f"key{i}", i) for i in range(1000)]
    parts = Partitioning(lambda key, n: hash(key) % n, R).split(items)
    assert sorted(x for p in parts for x in p) == sorted(items)
    for r, p in enumerate(parts):
        assert all(hash(k) % R == r for k, _ in p)


@pytest.mark.parametrize("answer", [True, 3, -1, 1.0, None])
def test_a_user_partitioner_answer_out_of_range_names_the_key(answer):
    def partitioner(key, n):
        return answer if key == "key500" else 0

    with pytest.raises(ValueError, match="returned .* for key 'key500'"):
        Partitioning(partitioner, 3).split([(f"key{i}", i) for i in range(1000)])
