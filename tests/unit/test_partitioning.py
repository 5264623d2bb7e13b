"""The default partitioner: equal keys share a partition in every process, whatever their type."""

from __future__ import annotations

import enum
import importlib
import json
import os
import subprocess
import sys
from collections import namedtuple
from decimal import Decimal
from fractions import Fraction

import pytest

from zmqmr import partitioning
from zmqmr.partitioning import (
    Partitioning,
    default_partitioner,
    encode,
    seeded_hashes,
    seeded_hashing,
    stable_hash,
)

#: Key types of a user's job, in a module of their own (as a job file is).
KEYS_MODULE = '''
import dataclasses
import enum
import functools
from collections import namedtuple


class Color(enum.Enum):
    RED = "r"
    GREEN = 2


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 4
    W = 2


@dataclasses.dataclass(frozen=True, order=True)
class Point:
    x: int
    y: str


@functools.total_ordering
class Name:
    """Equality and hash by a string field; the default repr holds an address."""

    def __init__(self, text):
        self.text = text

    def __eq__(self, other):
        return isinstance(other, Name) and self.text == other.text

    def __hash__(self):
        return hash(self.text)

    def __lt__(self, other):
        return self.text < other.text


class Folded(str):
    """A str that ignores case: it overrides str's == and hash."""

    def __eq__(self, other):
        return isinstance(other, Folded) and self.lower() == other.lower()

    def __hash__(self):
        return hash(self.lower())


Row = namedtuple("Row", "a b")


def keys():
    return [
        "apple", 7, (1, "x"), None,
        frozenset({"a", "b", 1}), frozenset(), frozenset({("x", 1), 2.5}),
        frozenset({"k%d" % i for i in range(40)}),
        Color.RED, Color.GREEN, Level.HIGH, Perm.R | Perm.W,
        Point(1, "p"), Point(2, "q"), Name("n"), Name("naïve"), ("t", Name("m")),
        frozenset({Name("q"), 3}), Row("a", 1), Folded("Ab"), int, Point,
    ]
'''
R = 13


@pytest.fixture
def keysmod(tmp_path, monkeypatch):
    (tmp_path / "userkeys.py").write_text(KEYS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("userkeys")
    yield module
    sys.modules.pop("userkeys", None)


def partitions_elsewhere(tmp_path, hashseed: str) -> list[int]:
    code = (
        "import json, sys, userkeys\n"
        "from zmqmr.partitioning import Partitioning, seeded_hashing\n"
        "with seeded_hashing():\n"
        f"    part = Partitioning(None, {R})\n"
        "    json.dump([part(k) for k in userkeys.keys()], sys.stdout)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, check=True, timeout=60
    )
    return json.loads(out.stdout)


def test_every_key_type_gets_the_same_partition_in_every_process(keysmod, tmp_path):
    keys = keysmod.keys()
    with seeded_hashing():
        here = [Partitioning(None, R)(k) for k in keys]
    assert len(set(here)) > 5  # the keys really spread over partitions
    assert partitions_elsewhere(tmp_path, "0") == here  # hashed in process, as an executor does
    assert partitions_elsewhere(tmp_path, "1") == here  # hashed by a helper
    assert partitions_elsewhere(tmp_path, "4242") == here


def test_split_agrees_with_the_partition_of_each_key(keysmod):
    keys = keysmod.keys()
    with seeded_hashing():
        part = Partitioning(None, R)
        parts = part.split((k, i) for i, k in enumerate(keys))
        assert sorted(i for p in parts for _, i in p) == list(range(len(keys)))
        for p, items in enumerate(parts):
            assert all(part(k) == p for k, _ in items)


def test_default_partitioner_outside_a_block_asks_a_helper_of_its_own(keysmod):
    key = keysmod.Name("outside")
    with seeded_hashing():
        inside = default_partitioner(key, R)
    assert default_partitioner(key, R) == inside


# -- equal keys, one partition ----------------------------------------------------------------


class Small(enum.IntEnum):
    ONE = 1


class Letter(str, enum.Enum):
    A = "a"


Pair = namedtuple("Pair", "k v")


class Text(str):
    """A str subclass that keeps str's == and hash."""


EQUAL_KEYS = {
    "one": [1, 1.0, True, Fraction(1), Decimal(1), Decimal("1.000"), complex(1, 0), Small.ONE],
    "zero": [0, 0.0, -0.0, False, Fraction(0), Decimal("-0")],
    "half": [0.5, Fraction(1, 2), Decimal("0.5")],
    "tenth": [Fraction(1, 10), Decimal("0.1"), Fraction(2, 20)],
    "big": [2**70, float(2**70), Fraction(2**70), Decimal(2**70)],
    "str": ["a", Text("a"), Letter.A],
    "tuple": [("k", 1), ("k", 1.0), ("k", True), Pair("k", 1), ("k", Fraction(1))],
    "nested": [(("a", (1, 2.0)),), ((Text("a"), (True, 2)),)],
    "frozenset": [frozenset({1, "a", (2, 3)}), frozenset({"a", 1.0, (2.0, 3)})],
}


@pytest.mark.parametrize("name", list(EQUAL_KEYS))
def test_equal_keys_of_different_types_share_a_partition(name):
    keys = EQUAL_KEYS[name]
    assert all(k == keys[0] for k in keys)  # the premise: they are one key in a dict
    for r in (2, 3, 7, 10, 64, 1000):
        assert len({default_partitioner(k, r) for k in keys}) == 1, (name, r)
    assert len({encode(k) for k in keys}) == 1


def test_a_frozenset_encodes_the_same_whatever_its_iteration_order():
    # 1 and 9 collide in an 8-slot table: the one inserted first comes first
    a, b = frozenset([1, 9]), frozenset([9, 1])
    assert a == b and list(a) != list(b)
    big_a = frozenset(f"w{i}" for i in range(50))
    big_b = frozenset(sorted(big_a, reverse=True))
    assert encode(a) == encode(b) and encode(big_a) == encode(big_b)
    assert encode(frozenset({1, 2})) != encode(frozenset({1, 3}))


def test_keys_that_differ_get_encodings_that_differ():
    keys = ["a", b"a", 1, 1.5, None, ("a",), ("a", "b"), ("ab",), frozenset({"a"}), Small.ONE]
    encodings = [encode(k) for k in keys]
    # Small.ONE == 1 and encodes as 1; everything else is distinct
    assert len(set(encodings)) == len(keys) - 1
    assert len({stable_hash(k) for k in keys[:-1]}) == len(keys) - 1


def test_types_that_override_equality_take_the_hash_route(keysmod):
    assert encode(keysmod.Name("a")) is None
    assert encode(keysmod.Point(1, "a")) is None
    assert encode(keysmod.Folded("A")) is None  # not encoded as the str "A"
    assert encode(("x", keysmod.Name("a"))) is None
    assert encode(frozenset({keysmod.Name("a")})) is None
    # ... and equal ones share a partition
    for r in (2, 7, 64):
        with seeded_hashing():
            assert default_partitioner(keysmod.Folded("Ab"), r) == default_partitioner(
                keysmod.Folded("aB"), r
            )
            assert default_partitioner(keysmod.Point(1, "a"), r) == default_partitioner(
                keysmod.Point(1.0, "a"), r
            )


def test_enum_members_and_classes_are_encoded_by_name_not_by_address(keysmod):
    assert encode(keysmod.Color.RED) == b"Euserkeys.Color:r"
    assert encode(keysmod.Perm.R | keysmod.Perm.W) == b"Euserkeys.Perm:i6"
    assert encode(keysmod.Level.HIGH) == encode(2)  # an IntEnum is its int
    assert encode(int) == b"Tbuiltins.int"


def test_seeded_hashes_are_what_a_process_with_the_fixed_seed_computes():
    keys = ["abc", ("x", "y"), b"bytes", frozenset({"q"})]
    code = f"import json; print(json.dumps([hash(k) for k in {keys!r}]))"
    env = {**os.environ, "PYTHONHASHSEED": partitioning.HASH_SEED}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, check=True, timeout=60
    )
    assert not partitioning.seed_is_fixed()  # pytest runs with a random seed: the helper answers
    assert seeded_hashes(keys) == json.loads(out.stdout)


def test_a_helper_answers_each_distinct_key_once(monkeypatch):
    asked: list[list] = []
    real = partitioning.SeededHasher._ask

    def ask(self, keys):
        asked.append(list(keys))
        return real(self, keys)

    monkeypatch.setattr(partitioning.SeededHasher, "_ask", ask)
    with seeded_hashing() as hasher:
        first = hasher.hashes([("a", 1), ("b", 2), ("a", 1)])
        second = hasher.hashes([("a", 1.0), ("c", 3)])
    assert first[0] == first[2] == second[0]
    assert asked == [[("a", 1), ("b", 2)], [("c", 3)]]


def test_a_key_of_the_hash_route_that_cannot_be_pickled_is_named():
    class Local:
        def __init__(self):
            self.gen = (i for i in range(3))  # generators do not pickle

        def __hash__(self):
            return 1

    with pytest.raises(TypeError, match="Local.*picklable"):
        seeded_hashes([Local()])


# -- the user's partitioner ------------------------------------------------------------------


@pytest.mark.parametrize("r", [1, 3])
def test_the_users_partitioner_is_called_and_checked_at_every_r(r):
    calls = []

    def five(key, n):
        calls.append((key, n))
        return 5

    with pytest.raises(ValueError, match=rf"returned 5 for key 'k'.*\[0, {r}\)"):
        Partitioning(five, r).split([("k", 1)])
    with pytest.raises(ValueError, match=rf"\[0, {r}\)"):
        Partitioning(five, r)("k")
    assert calls == [("k", r), ("k", r)]


def test_the_users_partitioner_decides_even_at_one_partition():
    calls = []

    def zero(key, n):
        calls.append(key)
        return 0

    parts = Partitioning(zero, 1).split([("a", 1), ("b", 2)])
    assert parts == [[("a", 1), ("b", 2)]] and calls == ["a", "b"]
