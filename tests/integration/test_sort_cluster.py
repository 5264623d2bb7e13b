"""A sort on a real cluster: RangePartitioner, flat map outputs, batched reduces.

The part files, concatenated, must be the input's records sorted whole, and
byte for byte what run_serial's results make; a user's function with the
same ranges (called once per record) must give the same bytes.
"""

from __future__ import annotations

import os
import random

import pytest

import zmqmr

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BOUNDS = ["F", "P", "Z", "j", "t"]
RECORDS = 60_000


def mapper(_, line):
    return ((line[:8], line[8:]),)


def first(_, values):
    return ",".join(values)


def ranges(key, n):
    return sum(b <= key for b in BOUNDS)


@pytest.fixture(scope="module")
def cluster():
    with zmqmr.LocalCluster(workers=2, heartbeat_interval=0.2, worker_timeout=5) as c:
        yield c


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Lines ``key(8) value``: distinct keys, some repeated, one hot key."""
    rng = random.Random(7)
    keys = ["".join(rng.choices(ALPHABET, k=8)) for _ in range(RECORDS)]
    lines = [k + "".join(rng.choices(ALPHABET, k=40)) for k in keys]
    lines += [rng.choice(keys) + f"repeat{i}" for i in range(2000)]
    lines += [f"HOTKEY00hot{i}" for i in range(5000)]
    rng.shuffle(lines)
    path = str(tmp_path_factory.mktemp("sort") / "records.txt")
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def part_text(result):
    out = []
    for path in sorted(result.output_files):
        with open(path, encoding="utf-8") as f:
            out.append(f.read())
    return out


@pytest.mark.timeout(300)
def test_a_sort_with_range_partitioner_gives_run_serials_bytes(cluster, records, tmp_path):
    def job(partitioner, out):
        return zmqmr.Job(mapper=mapper, reducer=first, inputs=[records], num_reducers=6,
                         partitioner=partitioner, split_size=1 << 20,
                         output_dir=str(tmp_path / out))  # fmt: skip

    by_range = cluster.client().run(job(zmqmr.RangePartitioner(BOUNDS), "range"), progress=False)
    by_fn = cluster.client().run(job(ranges, "fn"), progress=False)
    serial = zmqmr.run_serial(job(zmqmr.RangePartitioner(BOUNDS), "serial"))
    texts = part_text(by_range)
    assert texts == part_text(by_fn)
    want = list(serial.items())
    assert list(by_range.items()) == want
    assert "".join(texts) == "".join(f"{k}\t{v}\n" for k, v in want)
    lines = "".join(texts).splitlines()
    assert lines == sorted(lines)  # the ranges keep key order across part files
    with open(records) as f:
        assert len(lines) == len({line[:8] for line in f})
    assert by_range.stats["maps"] > 2
    assert os.path.exists(os.path.join(str(tmp_path / "range"), "_SUCCESS"))
