"""Helpers around user code: the default partitioner, pair checks, key order, grouping, counters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction

import pytest

from zmqmr import mapoutput, userfn
from zmqmr.userfn import (
    checked_partitioner,
    counting,
    default_partitioner,
    increment,
    output_pairs,
    reduce_groups,
    sort_by_key,
    stable_hash,
)

#: Keys whose partition must not depend on the process; written as Python literals.
KEYS_SOURCE = """[
    "apple", "", "naïve café", "日本", "x" * 100, "\\udcff",
    ("a", 1), ("a", ("b", 2.5)), (), 42, -7, 0, 2**70, 3.25, -0.5, 1e300,
    b"bytes", b"", None, True, False,
]"""
KEYS = eval(KEYS_SOURCE)  # noqa: S307 - a literal, shared with the subprocess
R = 13


def partitions_in_subprocess(hashseed: str) -> list[int]:
    code = (
        "import json, sys\n"
        "from zmqmr.userfn import default_partitioner\n"
        f"keys = {KEYS_SOURCE}\n"
        f"json.dump([default_partitioner(k, {R}) for k in keys], sys.stdout)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, check=True, timeout=60
    )
    return json.loads(out.stdout)


def test_default_partitioner_is_the_same_in_other_processes():
    here = [default_partitioner(k, R) for k in KEYS]
    assert len(set(here)) > 3  # the keys really spread over partitions
    assert partitions_in_subprocess("1") == here
    assert partitions_in_subprocess("4242") == here


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_default_partitioner_stays_in_range(key):
    for r in (1, 2, 7, 1000):
        p = default_partitioner(key, r)
        assert isinstance(p, int) and 0 <= p < r
        assert checked_partitioner(None, r)(key) == p


def test_equal_keys_one_float_true_share_a_partition():
    for r in (2, 3, 7, 64, 1000):
        assert (
            default_partitioner(1, r) == default_partitioner(1.0, r) == default_partitioner(True, r)
        )
        assert (
            default_partitioner(0, r) == default_partitioner(0.0, r) == default_partitioner(-0.0, r)
        )
        assert default_partitioner(0, r) == default_partitioner(False, r)
        assert default_partitioner(("k", 1), r) == default_partitioner(("k", 1.0), r)
    assert stable_hash(2**53) == stable_hash(float(2**53))


@pytest.mark.parametrize(
    "other", [Fraction(3, 1), Decimal(3), Decimal("3.0")], ids=["Fraction", "Decimal", "Decimal.0"]
)
def test_equal_numeric_keys_of_other_types_share_a_partition(other):
    # 3 == Fraction(3) == Decimal(3): one key in run_serial's dict, so one key in the cluster
    assert other == 3
    assert [default_partitioner(other, r) for r in (2, 7, 1000)] == [
        default_partitioner(3, r) for r in (2, 7, 1000)
    ]


def test_single_partition_maps_everything_to_zero():
    part = checked_partitioner(None, 1)
    assert {part(k) for k in KEYS} == {0}


@pytest.mark.parametrize("answer", [-1, 4, 1.0, True, "0", None], ids=repr)
def test_checked_partitioner_refuses_answers_outside_the_range(answer):
    part = checked_partitioner(lambda key, n: answer, 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        part("k")


def test_checked_partitioner_passes_the_user_answer_and_partition_count():
    seen = []

    def user(key, n):
        seen.append((key, n))
        return len(key) % n

    part = checked_partitioner(user, 3)
    assert [part(k) for k in ("a", "bb", "ccc")] == [1, 2, 0]
    assert seen == [("a", 3), ("bb", 3), ("ccc", 3)]


# -- pairs -----------------------------------------------------------------------------


def test_output_pairs_accepts_generators_lists_dicts_and_none():
    assert list(output_pairs(iter([("a", 1), ["b", 2]]))) == [("a", 1), ("b", 2)]
    assert list(output_pairs([("a", 1)])) == [("a", 1)]
    assert list(output_pairs({"a": 1, "b": 2})) == [("a", 1), ("b", 2)]
    assert list(output_pairs(None)) == []
    assert all(type(p) is tuple for p in output_pairs([["b", 2]]))


@pytest.mark.parametrize(
    ("out", "match"),
    [
        ("key value", "returned a str"),
        (b"kv", "returned a bytes"),
        (5, "returned int"),
        ([("a", 1, 2)], "pairs, got tuple"),
        (["ab"], "pairs, got str"),
        ([5], "pairs, got int"),
        ([("a",)], "pairs, got tuple"),
    ],
    ids=repr,
)
def test_output_pairs_refuses_what_is_not_pairs_naming_the_function(out, match):
    with pytest.raises(TypeError, match=match) as info:
        list(output_pairs(out, "combiner"))
    assert "combiner" in str(info.value)


# -- order -----------------------------------------------------------------------------


def test_sort_by_key_sorts_in_place_and_is_stable():
    items = [("b", 1), ("a", 2), ("b", 0), ("a", 1)]
    sort_by_key(items)
    assert items == [("a", 2), ("a", 1), ("b", 1), ("b", 0)]


@pytest.mark.parametrize(
    ("keys", "names"),
    [
        ([1, "a"], ("int", "str")),
        (["a", None, "b"], ("str", "NoneType")),
        ([(1, 2), 3.5], ("tuple", "float")),
    ],
    ids=["int-str", "str-None", "tuple-float"],
)
def test_sort_by_key_error_names_both_key_types(keys, names):
    items = [(k, i) for i, k in enumerate(keys)]
    with pytest.raises(TypeError, match="mutually orderable") as info:
        sort_by_key(items)
    for name in names:
        assert name in str(info.value)


def test_merged_streams_of_unorderable_keys_say_so():
    streams = [iter([(1, [1])]), iter([("a", [2])])]
    with pytest.raises(TypeError, match="mutually orderable"):
        list(userfn.merged(streams))


def test_merged_interleaves_sorted_streams():
    streams = [iter([("a", [1]), ("c", [3])]), iter([("a", [2]), ("b", [4])])]
    assert [k for k, _ in userfn.merged(streams)] == ["a", "a", "b", "c"]


def test_grouping_in_a_dict_gives_what_merge_then_groupby_gives():
    # Random sorted streams with repeated keys across streams, and equal keys of
    # different types (1, 1.0, True): both paths give the same groups, keys and
    # value order, so the reducer sees the same calls.
    import random

    rng = random.Random(7)
    for _ in range(50):
        streams = []
        for s in range(rng.randint(1, 6)):
            keys = sorted(set(rng.choice([0, 1, 1.0, True, 2, 2.5, 3, 10]) for _ in range(5)))
            streams.append(
                [(k, [f"s{s}-{k!r}-{j}" for j in range(rng.randint(1, 3))]) for k in keys]
            )
        want = list(
            reduce_groups(
                lambda k, vs: (type(k), list(vs)), userfn.merged([iter(s) for s in streams])
            )
        )
        groups: dict = {}
        for stream in streams:  # the reduce side's in-memory path, without the extension
            mapoutput._merge_part(stream, groups)
        got = list(reduce_groups(lambda k, vs: (type(k), list(vs)), userfn.sorted_groups(groups)))
        assert got == want


def test_groups_of_unorderable_keys_say_so():
    with pytest.raises(TypeError, match="mutually orderable"):
        userfn.sorted_groups({1: [1], "a": [2]})


# -- grouping --------------------------------------------------------------------------


def test_reduce_groups_merges_equal_adjacent_keys_into_one_call():
    calls = []

    def reducer(key, values):
        assert not isinstance(values, list)  # an iterator, as the contract says
        vals = list(values)
        calls.append((key, vals))
        return sum(vals)

    groups = [("a", [1, 2]), ("a", [3]), ("b", [4]), ("c", []), ("c", [5]), ("a", [6])]
    counters: dict[str, int] = {}
    out = list(reduce_groups(reducer, groups, counters))
    assert out == [("a", 6), ("b", 4), ("c", 5), ("a", 6)]
    assert calls == [("a", [1, 2, 3]), ("b", [4]), ("c", [5]), ("a", [6])]
    assert counters == {"zmqmr.reduce_input_groups": 4}


def test_reduce_groups_treats_equal_keys_of_different_types_as_one():
    out = list(reduce_groups(lambda k, vs: sum(vs), [(1, [1]), (1.0, [2]), (True, [3])]))
    assert out == [(1, 6)]


def gen_reducer(key, values):
    yield sum(values)


async def async_reducer(key, values):
    return sum(values)


async def async_gen_reducer(key, values):
    yield sum(values)


@pytest.mark.parametrize(
    "fn, kind",
    [
        (gen_reducer, "generator"),
        (async_reducer, "coroutine"),
        (async_gen_reducer, "async_generator"),
    ],
    ids=["generator", "coroutine", "async generator"],
)
def test_a_reducer_that_does_not_return_a_value_is_told_to(fn, kind):
    with pytest.raises(TypeError) as info:
        list(reduce_groups(fn, [("k", [1, 2])]))
    assert str(info.value) == (
        f"reducer returned a {kind} for key 'k'; it must return one value: "
        "use return, not yield (return a list to keep several values)"
    )


def test_a_combiner_that_yields_is_told_to_return_and_its_code_never_runs():
    ran = []

    def combiner(key, values):
        ran.append(key)
        yield sum(values)

    with pytest.raises(TypeError, match=r"^combiner returned a generator for key \('a', 1\);"):
        userfn.combined(combiner, ("a", 1), iter([1, 2]))
    assert ran == []  # the generator was closed unstarted


@pytest.mark.parametrize("value", [[1, 2], iter([1]), (x for x in ()).__class__, None, {"a": 1}])
def test_reducers_may_return_any_value_that_is_not_a_generator(value):
    assert list(reduce_groups(lambda k, vs: value, [("k", [1])])) == [("k", value)]
    assert userfn.combined(lambda k, vs: value, "k", iter([1])) is value


# -- counters --------------------------------------------------------------------------


def test_increment_outside_a_task_does_nothing():
    previous = counting(None)
    try:
        increment("c", 5)  # no error, nowhere to count
        mine: dict[str, int] = {}
        counting(mine)
        counting(None)
        increment("c", 5)
        assert mine == {}
    finally:
        counting(previous)


def test_increment_inside_counting_adds_up_and_counting_restores_the_previous():
    outer: dict[str, int] = {}
    inner: dict[str, int] = {}
    before = counting(outer)
    try:
        increment("x")
        previous = counting(inner)
        assert previous is outer
        increment("x", 2)
        increment("y", 3)
        assert counting(previous) is inner
        increment("x", 10)
    finally:
        counting(before)
    assert inner == {"x": 2, "y": 3}
    assert outer == {"x": 11}


@pytest.mark.parametrize(("name", "n"), [(5, 1), ("c", 1.5), ("c", True), (None, 1)], ids=repr)
def test_increment_refuses_bad_arguments(name, n):
    with pytest.raises(TypeError):
        increment(name, n)
