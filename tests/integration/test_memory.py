"""Bounded memory on the reduce side: hot keys, merges in passes, large shuffles, on LocalCluster.

Every answer is checked against run_serial or computed independently; that a
spill happened is read from ``stats["spilled_bytes"]``. Executor memory is
read through psutil during one run, and bounded only with a wide margin
(benchmarks/memory.py prints the figures).
"""

from __future__ import annotations

import threading

import psutil
import pytest
from conftest import count_words, wc_mapper, wc_reducer

import zmqmr

MiB = 1 << 20


def hot_mapper(key, n):
    """``n`` values of one hot key, and a few of cooler ones, per record."""
    for j in range(n):
        yield "hot", key * n + j
        if j % 1000 == 0:
            yield f"cool-{j % 7}", 1


def streaming_reducer(key, values):
    """Count, sum and an order-sensitive checksum of the values, holding none of them."""
    n = total = order = 0
    for v in values:
        n += 1
        total += v
        order = (order * 31 + v) % 1_000_000_007
    return n, total, order


@pytest.mark.timeout(300)
def test_a_hot_key_of_millions_of_values_streams_through_merge_passes():
    maps, per = 8, 250_000  # 2 M values of one key
    job = zmqmr.Job(
        hot_mapper, streaming_reducer, inputs=[(i, per) for i in range(maps)], num_reducers=2
    )
    with zmqmr.LocalCluster(
        workers=2, reduce_memory=1 * MiB, merge_fanin=2, spill_records=100_000
    ) as c:
        result = c.client().run(job)
    got = dict(result.items())
    n = maps * per
    assert got["hot"][:2] == (n, n * (n - 1) // 2)  # independent: the values are 0 .. n-1
    assert list(result.items()) == list(zmqmr.run_serial(job).items())  # the order too
    assert result.stats["spilled_bytes"] > 8 * MiB
    assert result.counters["zmqmr.spilled_bytes"] == result.stats["spilled_bytes"]


def frozen_mapper(key, i):
    for j in range(40):
        yield frozenset({(i * 7 + j) % 23, (i + j) % 5}), i * 40 + j


def frozen_reducer(key, values):
    return sorted(values)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("reducers", [1, 3])
def test_frozenset_keys_group_right_when_merged_from_disk(reducers):
    # Under frozenset's own < (the subset order) a merge leaves equal sets apart.
    job = zmqmr.Job(
        frozen_mapper,
        frozen_reducer,
        inputs=[(i, i) for i in range(600)],
        num_reducers=reducers,
        split_size=2_000,  # many map outputs: more streams than the fan-in
    )
    with zmqmr.LocalCluster(workers=2, reduce_memory=1, merge_fanin=2, spill_records=500) as c:
        result = c.client().run(job)
    items = list(result.items())
    expected: dict[frozenset, list[int]] = {}
    for i in range(600):
        for j in range(40):
            key = frozenset({(i * 7 + j) % 23, (i + j) % 5})
            expected.setdefault(key, []).append(i * 40 + j)
    assert len(items) == len(expected)  # each distinct set once
    assert dict(items) == expected
    assert dict(items) == dict(zmqmr.run_serial(job).items())
    assert result.stats["spilled_bytes"] > 0
    assert result.stats["maps"] > 2


@pytest.mark.timeout(300)
def test_word_count_merging_more_streams_than_the_fanin_equals_the_serial_run(books):
    job = zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:3], num_reducers=2, split_size=256 * 1024)
    with zmqmr.LocalCluster(workers=2, reduce_memory=64 * 1024, merge_fanin=3) as c:
        result = c.client().run(job)
    assert list(result.items()) == list(zmqmr.run_serial(job).items())
    assert dict(result.items()) == count_words(books[:3])
    assert result.stats["maps"] > 3 and result.stats["spilled_bytes"] > 0


def wide_mapper(key, n):
    pad = "x" * 300
    for j in range(n):
        yield ("hot" if j % 2 else f"k{key}-{j % 5000}"), f"{key}:{j}:{pad}"


def length_reducer(key, values):
    n = size = 0
    for v in values:
        n += 1
        size += len(v)
    return n, size


class PeakRss:
    """The peak RSS of every executor under the cluster's workers, sampled by a thread."""

    def __init__(self, worker_pids: list[int]) -> None:
        self.workers = [psutil.Process(pid) for pid in worker_pids]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for w in self.workers:
                try:
                    children = w.children(recursive=True)
                except psutil.Error:
                    continue
                for child in children:
                    try:
                        self.peak = max(self.peak, child.memory_info().rss)
                    except psutil.Error:
                        pass

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.timeout(400)
def test_a_large_shuffle_with_a_hot_key_keeps_executor_memory_far_below_the_data():
    maps, per = 10, 100_000  # 1 M values of about 310 bytes: 330 MB once decoded
    job = zmqmr.Job(
        wide_mapper, length_reducer, inputs=[(i, per) for i in range(maps)], num_reducers=2
    )
    cluster = zmqmr.LocalCluster(workers=2, reduce_memory=16 * MiB, spill_records=50_000)
    with cluster as c, PeakRss(c.worker_pids) as rss:
        result = c.client().run(job)
    expected: dict[str, list[int]] = {}
    for i in range(maps):
        for j in range(per):
            key = "hot" if j % 2 else f"k{i}-{j % 5000}"
            count_size = expected.setdefault(key, [0, 0])
            count_size[0] += 1
            count_size[1] += len(f"{i}:{j}:") + 300
    assert dict(result.items()) == {k: tuple(v) for k, v in expected.items()}
    assert result.stats["shuffle_bytes"] > 250 * MiB
    assert result.stats["spilled_bytes"] > 100 * MiB
    # Materialised, the hot key's values alone would take about 180 MB.
    assert 0 < rss.peak < 250 * MiB, rss.peak
