"""Exactly the serial answer for every job a user can write: key types, inputs, values, errors.

Every cluster result is compared with run_serial (the same records in the same
order) and with an answer computed here without zmqmr.
"""

from __future__ import annotations

import bz2
import dataclasses
import enum
import functools
import gzip
import lzma
import os
import textwrap
import zlib
from collections import Counter, namedtuple
from decimal import Decimal
from fractions import Fraction

import pytest

import zmqmr
from zmqmr.cli import load_job_file


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"{n}workers")
def cluster(request):
    with zmqmr.LocalCluster(workers=request.param, heartbeat_interval=0.2, worker_timeout=3) as c:
        yield c


def total(key, values):
    return sum(values)


# -- key types ---------------------------------------------------------------------------------


class Level(enum.IntEnum):
    ONE = 1
    THREE = 3


class Letter(str, enum.Enum):
    APPLE = "apple"


class Text(str):
    """A str subclass that keeps str's == and hash."""


@functools.total_ordering
class Color(enum.Enum):
    RED = 1
    GREEN = 2
    BLUE = 3
    CRIMSON = 1  # an alias: the same member as RED

    def __lt__(self, other):
        return self.value < other.value


Row = namedtuple("Row", "name n")


@dataclasses.dataclass(frozen=True, order=True)
class Point:
    x: object
    tag: str


@functools.total_ordering
class Name:
    """Equality, hash and order by a string field; the default repr holds an address."""

    def __init__(self, text):
        self.text = text

    def __eq__(self, other):
        return isinstance(other, Name) and self.text == other.text

    def __hash__(self):
        return hash(self.text)

    def __lt__(self, other):
        return self.text < other.text


def key_groups(family: str) -> list[list]:
    """Distinct keys of one family, each as the list of its equal variants (of several types).

    Built afresh on every call, so a mapper's keys are made in the executor.
    """
    if family == "numbers":
        return [
            [1, 1.0, True, Fraction(1), Decimal(1), Level.ONE],
            [0, False, 0.0, -0.0, Decimal("-0")],
            [2, 2.0, Fraction(4, 2), Decimal("2.00")],
            [0.5, Fraction(1, 2), Decimal("0.5")],
            [Fraction(1, 3)],
            [Fraction(1, 10), Decimal("0.1")],
            [2**70, float(2**70), Decimal(2**70)],
            [-7, -7.0, Fraction(-14, 2)],
            [3, Level.THREE, 3.0],
        ]
    if family == "text":
        return [
            ["apple", Text("apple"), Letter.APPLE],
            ["naïve café"],
            ["日本語"],
            [""],
            ["x" * 200, Text("x" * 200)],
            ["a\udcffb"],
            ["B"],
            ["b"],
        ]
    if family == "tuples":
        return [
            [("k", 1), ("k", 1.0), Row("k", 1), ("k", True), ("k", Decimal(1))],
            [("k", 2), Row("k", 2.0)],
            [("b", b"raw"), ("b", b"raw")],
            [("c", ("nested", 2.5)), ("c", ("nested", Fraction(5, 2)))],
            [()],
            [("d",)],
        ]
    if family == "frozensets":
        # mutually incomparable sets (none is a subset of another), so sorted() is stable
        out = [
            [frozenset([f"a{i}", f"b{i}", i]), frozenset([float(i), f"b{i}", f"a{i}"])]
            for i in range(6)
        ]
        # 1 and 9 collide in a small set's table: these iterate in different orders
        out.append([frozenset([1, 9]), frozenset([9, 1]), frozenset([9.0, True])])
        return out
    if family == "enums":
        return [[Color.RED, Color.CRIMSON], [Color.GREEN], [Color.BLUE]]
    if family == "dataclasses":
        return [
            [Point(1, "a"), Point(1.0, "a"), Point(True, "a")],
            [Point(2, "a")],
            [Point(1, "b")],
            [Point(0.5, "a"), Point(Fraction(1, 2), "a")],
            [Point(-1, "z")],
        ]
    if family == "classes":
        return [[Name(f"n{i}")] for i in range(8)] + [[Name("naïve")]]
    raise ValueError(family)


FAMILIES = ["numbers", "text", "tuples", "frozensets", "enums", "dataclasses", "classes"]
RECORDS = [(i, i) for i in range(300)]


def variant(i: int, count: int) -> int:
    """Which of ``count`` key variants record ``i`` emits: scattered, so that each map
    task meets the variants of a key in its own order and keeps a different one."""
    return zlib.crc32(b"%d" % i) % count


def family_job(family: str, reducers: int) -> zmqmr.Job:
    def mapper(key, i):
        flat = [k for group in key_groups(family) for k in group]
        yield flat[variant(i, len(flat))], 1 + i % 2

    # about 8 splits: several map tasks, each holding variants of the same keys
    return zmqmr.Job(mapper, total, RECORDS, num_reducers=reducers, combiner=total, split_size=400)


def family_answer(family: str) -> dict:
    """What the job must return, counted here: one entry per group of equal keys."""
    groups = key_groups(family)
    flat = [(g, k) for g, group in enumerate(groups) for k in group]
    counts: Counter = Counter()
    for _, i in RECORDS:
        counts[flat[variant(i, len(flat))][0]] += 1 + i % 2
    return {groups[g][0]: n for g, n in counts.items()}


@pytest.mark.parametrize("reducers", [1, 3, 10])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_key_type_gives_one_record_per_key_in_the_serial_order(cluster, family, reducers):
    job = family_job(family, reducers)
    items = list(cluster.client().run(job).items())
    expected = family_answer(family)
    assert len(items) == len(expected)  # no key split across partitions
    assert dict(items) == expected
    assert items == list(zmqmr.run_serial(job).items())
    for key, _ in items:  # keys of classes of this module come back as this module's classes
        assert any(type(key) is type(v) for group in key_groups(family) for v in group)


# -- inputs ------------------------------------------------------------------------------------


def line_mapper(key, line):
    yield line, 1


def write_inputs(tmp_path) -> tuple[list[str], Counter]:
    """Plain, CRLF, gzip, bz2 and xz files, and the lines they hold, read without zmqmr."""
    lines = [f"line {i % 17} {'é' if i % 5 == 0 else ''}".strip() for i in range(400)]
    text = "\n".join(lines) + "\n"
    crlf = "\r\n".join(lines[:150]) + "\r\n"
    files = {
        "plain.txt": text.encode(),
        "windows.txt": crlf.encode(),
        "mixed.txt": (text[:500] + crlf[:500] + "tail\r").encode(),
        "a.txt.gz": gzip.compress(crlf.encode()),
        "b.txt.bz2": bz2.compress(text.encode()),
        "c.txt.xz": lzma.compress((crlf + "no newline\r").encode()),
    }
    expected: Counter = Counter()
    paths = []
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(str(path))
        raw = {".gz": gzip, ".bz2": bz2, ".xz": lzma}.get(os.path.splitext(name)[1])
        content = (raw.decompress(data) if raw else data).decode()
        for line in content.split("\n")[: -1 if content.endswith("\n") else None]:
            expected[line[:-1] if line.endswith("\r") else line] += 1
    return paths, expected


def test_crlf_and_compressed_inputs_read_like_the_plain_text(cluster, tmp_path):
    paths, expected = write_inputs(tmp_path)
    job = zmqmr.Job(line_mapper, total, paths, num_reducers=3, combiner=total, split_size=700)
    result = cluster.client().run(job)
    items = list(result.items())
    assert dict(items) == expected
    assert not any(line.endswith("\r") for line, _ in items)
    assert items == list(zmqmr.run_serial(job).items())
    plain_splits = sum(-(-os.path.getsize(p) // 700) for p in paths[:3])
    assert result.stats["maps"] == plain_splits + 3  # a compressed file is one split


def test_whole_files_are_one_map_task_each(cluster, tmp_path):
    paths = []
    for i in range(8):
        path = tmp_path / f"book{i}.txt"
        path.write_text(f"book {i}\r\n" * (i + 1))
        paths.append(str(path))

    def mapper(path, text):
        yield os.path.basename(path), text.count("\n")

    job = zmqmr.Job(mapper, total, zmqmr.WholeFiles(paths), num_reducers=2)
    result = cluster.client().run(job)
    assert result.stats["maps"] == 8
    assert dict(result.items()) == {f"book{i}.txt": i + 1 for i in range(8)}
    assert list(result.items()) == list(zmqmr.run_serial(job).items())


# -- one contract: the same errors in both ------------------------------------------------------


def serial_error(job: zmqmr.Job) -> Exception:
    with pytest.raises(Exception) as info:
        zmqmr.run_serial(job)
    return info.value


def cluster_error(cluster, job: zmqmr.Job) -> zmqmr.JobFailed:
    with pytest.raises(zmqmr.JobFailed) as info:
        cluster.client().run(job)
    return info.value


def five(key, n):
    return 5


def test_a_partitioner_out_of_range_fails_at_one_reducer_as_in_run_serial(cluster):
    job = zmqmr.Job(line_mapper, total, [(0, "k")], partitioner=five, max_attempts=1)
    serial = serial_error(job)
    failed = cluster_error(cluster, job)
    assert isinstance(serial, ValueError)
    assert str(serial) == "partitioner returned 5 for key 'k'; it must return an int in [0, 1)"
    assert (failed.remote_type, failed.remote_message) == ("ValueError", str(serial))


def yielding(key, values):
    yield sum(values)


@pytest.mark.parametrize("role", ["reducer", "combiner"])
def test_a_generator_reducer_or_combiner_fails_with_the_same_message_in_both(cluster, role):
    records = [(0, "k"), (1, "k")]  # one split: the map side has two values of "k" to combine
    kw = {"reducer": yielding} if role == "reducer" else {"reducer": total, "combiner": yielding}
    job = zmqmr.Job(line_mapper, inputs=records, max_attempts=1, split_size=1 << 20, **kw)
    serial = serial_error(job)
    failed = cluster_error(cluster, job)
    assert isinstance(serial, TypeError)
    assert str(serial) == (
        f"{role} returned a generator for key 'k'; it must return one value: "
        "use return, not yield (return a list to keep several values)"
    )
    assert (failed.remote_type, failed.remote_message) == ("TypeError", str(serial))


# -- values come back as they went in -----------------------------------------------------------


class Slotted:
    __slots__ = ("x", "tags")

    def __init__(self, x, tags):
        self.x, self.tags = x, tags

    def __eq__(self, other):
        return type(other) is Slotted and (self.x, self.tags) == (other.x, other.tags)


def slotted_mapper(key, i):
    yield i % 4, Slotted(i, {"even": i % 2 == 0, "t": (i, [i, str(i)])})


def keep_all(key, values):
    return sorted(values, key=lambda v: v.x)


def test_values_of_a_slotted_class_of_this_module_come_back_whole(cluster):
    job = zmqmr.Job(slotted_mapper, keep_all, [(i, i) for i in range(40)], num_reducers=3)
    items = list(cluster.client().run(job).items())
    assert items == list(zmqmr.run_serial(job).items())
    expected = {
        k: [Slotted(i, {"even": i % 2 == 0, "t": (i, [i, str(i)])}) for i in range(k, 40, 4)]
        for k in range(4)
    }
    assert dict(items) == expected
    assert all(type(v) is Slotted for _, vs in items for v in vs)


JOB_FILE = """\
import dataclasses


class Money:
    __slots__ = ("cents", "__currency")

    def __init__(self, cents, currency):
        self.cents, self.__currency = cents, currency

    def currency(self):
        return self.__currency

    def __eq__(self, other):
        return type(other) is Money and (self.cents, self.__currency) == (
            other.cents, other.currency())


@dataclasses.dataclass(frozen=True, slots=True)
class Sale:
    shop: str
    amount: Money


@dataclasses.dataclass
class Summary:
    count: int
    biggest: Sale
    by_shop: dict


def mapper(key, line):
    shop, cents = line.split(",")
    yield shop[0], Sale(shop, Money(int(cents), "EUR"))


def reducer(key, sales):
    sales = list(sales)
    by_shop = {}
    for s in sales:
        by_shop.setdefault(s.shop, []).append(s.amount)
    return Summary(len(sales), max(sales, key=lambda s: s.amount.cents), by_shop)
"""


def test_values_of_classes_defined_in_a_job_file_come_back_as_those_classes(cluster, tmp_path):
    path = tmp_path / "sales_job.py"
    path.write_text(textwrap.dedent(JOB_FILE))
    mod = load_job_file(str(path))
    lines = [f"{shop},{cents}" for shop in ("alpha", "beta", "apex") for cents in (5, 700, 30)]
    job = zmqmr.Job(mod.mapper, mod.reducer, [(i, line) for i, line in enumerate(lines)])
    items = list(cluster.client().run(job).items())
    assert items == list(zmqmr.run_serial(job).items())
    summaries = dict(items)
    assert sorted(summaries) == ["a", "b"]
    a = summaries["a"]
    assert type(a) is mod.Summary and type(a.biggest) is mod.Sale
    assert type(a.biggest.amount) is mod.Money and a.biggest.amount.currency() == "EUR"
    assert a.count == 6 and a.biggest.amount.cents == 700
    assert {shop: [m.cents for m in ms] for shop, ms in a.by_shop.items()} == {
        "alpha": [5, 700, 30],
        "apex": [5, 700, 30],
    }
