"""Ordering keys in a total order and merging sorted runs in passes; no sockets."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from zmqmr import mapoutput, merge, ordering, shuffle, userfn
from zmqmr.mapside import merge_runs
from zmqmr.userfn import reduce_groups, sort_by_key


def as_segment(groups):
    """Sorted groups as an in-memory fetched segment, cut into blocks as a map output is."""
    data = b"".join(b"".join(block) for block in mapoutput.encode_groups(groups, target=4096))
    return shuffle.Fetched(len(data), data=data)


def sorted_groups(pairs):
    groups = {}
    for k, v in pairs:
        groups.setdefault(k, []).append(v)
    items = list(groups.items())
    sort_by_key(items)
    return items


def reduced(groups):
    return list(reduce_groups(lambda k, vs: list(vs), groups))


# -- order ------------------------------------------------------------------------------


def test_keys_that_order_totally_are_their_own_order_key():
    for key in ("a", 1, 2.5, b"x", True, ("a", 1), ((1, 2), "b")):
        assert ordering.order_key(key) is key


def test_frozenset_keys_sort_so_that_equal_sets_are_adjacent():
    # Under the subset order these sets compare neither way; sorted() may leave
    # equal ones apart. The total order may not.
    sets = [frozenset(s) for s in ({1}, {2}, {1, 2}, {3}, set(), {2, 3}, {"a"}, {1, "a"})]
    rng = random.Random(3)
    for _ in range(100):
        items = [(rng.choice(sets), i) for i in range(60)]
        sort_by_key(items)
        keys = [k for k, _ in items]
        runs = [k for k, _ in itertools.groupby(keys)]
        assert len(runs) == len(set(keys))


def test_tuples_holding_frozensets_sort_element_by_element():
    items = [((2, frozenset({1})), 0), ((1, frozenset({5})), 1), ((1, frozenset({2})), 2)]
    items += [((1, frozenset({5})), 3)]
    sort_by_key(items)
    assert [k[0] for k, _ in items] == [1, 1, 1, 2]
    keys = [k for k, _ in items]
    assert len([k for k, _ in itertools.groupby(keys)]) == 3  # the two (1, {5}) side by side


def test_frozenset_and_str_keys_fail_naming_both_types():
    with pytest.raises(TypeError, match="mutually orderable") as info:
        sort_by_key([(frozenset({1}), 1), ("a", 2)])
    assert "frozenset" in str(info.value) and "str" in str(info.value)
    streams = merge.streams([as_segment([(frozenset({1}), [1])]), as_segment([("a", [2])])])
    with pytest.raises(TypeError, match="mutually orderable") as info:
        list(userfn.merged(streams))
    assert "frozenset" in str(info.value) and "str" in str(info.value)


def test_merging_frozenset_streams_groups_every_set_once():
    rng = random.Random(5)
    sets = [frozenset(rng.sample(range(6), rng.randint(0, 4))) for _ in range(30)]
    pairs = [[(rng.choice(sets), (s, i)) for i in range(200)] for s in range(7)]
    segments = [as_segment(sorted_groups(p)) for p in pairs]
    got = reduced(userfn.merged(merge.streams(segments)))
    want = {}
    for p in pairs:
        for k, v in p:
            want.setdefault(k, []).append(v)
    assert len(got) == len(want)
    assert dict(got) == want


def test_a_merge_unwraps_keys_whatever_stream_wrapped_them_and_only_there_looks():
    # Streams of str keys never wrap one, so no batch is searched for a wrapped key;
    # a frozenset stream's keys come out as the sets themselves, not their wrappers.
    runs = [[(f"k{s}{i:04d}", i) for i in range(3000)] for s in range(3)]
    plain = [as_segment(sorted_groups(r)) for r in runs]
    streams = merge.streams(plain)
    batches = list(userfn.merged_batches(streams))
    assert not any(s.wrapped for s in streams)
    assert {type(k) for b in batches for k, _ in b} == {str}
    sets = [frozenset({i % 7, i % 5}) for i in range(300)]
    mixed = [as_segment(sorted_groups([((i % 3, s), i) for i, s in enumerate(sets)])) for _ in "ab"]
    streams = merge.streams(mixed)
    keys = [k for b in userfn.merged_batches(streams) for k, _ in b]
    assert all(s.wrapped for s in streams)
    assert {type(k[1]) for k in keys} == {frozenset} and len(keys) == 2 * len(set(keys))


# -- passes -------------------------------------------------------------------------------


def _random_runs(rng, n, keys=40):
    runs = []
    for s in range(n):
        pairs = [(rng.randrange(keys), (s, i)) for i in range(rng.randint(0, 300))]
        runs.append(sorted_groups(pairs))
    return runs


@pytest.mark.parametrize(("n", "fanin"), [(1, 2), (3, 2), (9, 2), (17, 4), (40, 3), (16, 16)])
def test_merge_down_leaves_at_most_fanin_runs_and_the_same_groups(tmp_path, n, fanin):
    rng = random.Random(n * 100 + fanin)
    runs = _random_runs(rng, n)
    want = reduced(userfn.merged([iter(r) for r in runs]))
    sources = [as_segment(r) for r in runs]
    left, written = merge.merge_down(sources, fanin, str(tmp_path))
    assert sources == []
    assert len(left) <= fanin
    assert (written > 0) == (n > fanin)
    # Values in run order, as one merge of every run gives them (and run_serial).
    assert reduced(userfn.merged(merge.streams(left))) == want
    # Only the runs still to be read are on disk.
    assert sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(s.path) for s in left if s.path is not None
    )


def test_merge_down_keeps_a_hot_key_in_runs_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(mapoutput, "PART_VALUES", 1000)
    runs = [[("hot", [(s, i) for i in range(5000)])] for s in range(5)]
    left, written = merge.merge_down([as_segment(r) for r in runs], 2, str(tmp_path))
    assert written > 0
    pieces = list(userfn.merged(merge.streams(left)))
    assert len(pieces) > 5 and max(len(vs) for _, vs in pieces) <= 1000
    assert reduced(iter(pieces)) == [("hot", [(s, i) for s in range(5) for i in range(5000)])]


def test_fanin_shrinks_with_reduce_memory():
    assert merge.fanin_for(16, 64 << 20) == 16
    assert merge.fanin_for(16, 8 << 20) == 4
    assert merge.fanin_for(16, 1 << 10) == merge.MIN_FANIN


# -- the map side's merge of its runs -----------------------------------------------------------


def test_merge_runs_without_a_combiner_passes_a_keys_runs_through_unjoined():
    runs = [[("a", [1, 2]), ("b", [3])], [("a", [4])]]
    pieces = list(merge_runs(merge.streams([as_segment(r) for r in runs]), None))
    assert [(k, list(vs)) for k, vs in pieces] == [("a", [1, 2]), ("a", [4]), ("b", [3])]


def test_merge_runs_with_a_combiner_combines_a_key_across_runs():
    calls = []

    def combiner(k, vs):
        vs = list(vs)
        calls.append((k, vs))
        return sum(vs)

    runs = [[("a", [1, 2]), ("b", [3]), ("c", [5])], [("a", [4]), ("c", [6])]]
    got = list(merge_runs(merge.streams([as_segment(r) for r in runs]), combiner))
    assert got == [("a", [7]), ("b", [3]), ("c", [11])]
    assert calls == [("a", [1, 2, 4]), ("c", [5, 6])]


def test_merging_a_hot_keys_runs_reads_them_as_it_goes_in_stream_order():
    pulled = [0, 0, 0]

    def stream(s):
        for i in range(300):
            pulled[s] += 1
            yield "hot", [(s, i, j) for j in range(5000)]
        yield "z", [(s, "end")]

    merged = userfn.merged([stream(s) for s in range(3)])
    seen = []
    for _ in range(50):
        key, values = next(merged)
        seen.append(values[0][:2])
        assert sum(pulled) <= len(seen) + 6, pulled  # never the key's every run at once
    rest = list(merged)
    order = seen + [vs[0][:2] for k, vs in rest if k == "hot"]
    assert order == [(s, i) for s in range(3) for i in range(300)]  # stream order
    assert [k for k, _ in rest[-3:]] == ["z", "z", "z"]
