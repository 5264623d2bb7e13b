"""Jobs with many more reducers than keys per map output: most segments are empty.

Every answer is compared with ``run_serial``; the reduces fetch over two
workers' shuffle servers and from their own worker's disk.
"""

from __future__ import annotations

import os

import pytest
from conftest import count_words, wc_mapper, wc_reducer

import zmqmr


def _keys(key: int, value: int) -> list[tuple[int, int]]:
    return [(k, key) for k in range(value)]


def _total(key: int, values: object) -> int:
    return sum(values)  # type: ignore[call-overload]


@pytest.mark.timeout(300)
def test_many_small_maps_and_many_reducers_match_run_serial(books, tmp_path):
    # 60 maps of 50 keys each into 300 partitions: each map output is 5/6 empty
    # segments; with output_dir, empty partitions still give their part files
    records = zmqmr.Job(_keys, _total, inputs=[(i, 50) for i in range(60)], num_reducers=300)
    records.split_size = 1
    words = zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:2], num_reducers=128)
    words.output_dir = str(tmp_path / "out")
    with zmqmr.LocalCluster(workers=2) as c:
        got = c.client().run(records, progress=False)
        counted = c.client().run(words, progress=False)
    assert list(got.items()) == list(zmqmr.run_serial(records).items())
    assert got.stats["reduces"] == 300 and got.stats["maps"] == 60
    assert dict(counted.items()) == count_words(books[:2])
    parts = sorted(p for p in os.listdir(words.output_dir) if p.startswith("part-"))
    assert len(parts) == 128
    lines = []
    for p in parts:
        with open(os.path.join(words.output_dir, p), encoding="utf-8") as f:
            lines += f.read().splitlines()
    assert sorted(lines) == sorted(f"{w}\t{n}" for w, n in zmqmr.run_serial(words).items())
