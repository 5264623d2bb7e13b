"""userfn.merged: sorted streams of groups merged in batches by a stable sort, as
heapq.merge would merge them (equal keys in stream order), for any batch size."""

from __future__ import annotations

import heapq
import operator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqmr import userfn
from zmqmr.ordering import Ordered, order_key

streams_st = st.lists(
    st.lists(st.tuples(st.integers(0, 30), st.integers()), max_size=60), max_size=6
)


def as_streams(raw):
    """Each stream sorted by key, each group tagged with its stream and place."""
    out = []
    for s, groups in enumerate(raw):
        groups = sorted(groups, key=operator.itemgetter(0))
        out.append([(k, [(s, i, v)]) for i, (k, v) in enumerate(groups)])
    return out


@pytest.mark.parametrize("batch", [1, 2, 7, 1024])
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=streams_st)
def test_merged_is_heapq_merge_for_any_batch(monkeypatch, batch, raw):
    monkeypatch.setattr(userfn, "MERGE_BATCH", batch)  # the same value for every example
    streams = as_streams(raw)
    want = list(heapq.merge(*streams, key=operator.itemgetter(0)))
    assert list(userfn.merged([iter(s) for s in streams])) == want


def test_merged_unwraps_ordered_keys_and_names_unorderable_ones():
    keys = [frozenset({1}), frozenset({1, 2}), frozenset({3})]
    ranked = sorted(keys, key=order_key)
    streams = [[(Ordered(k, order_key(k)), [n]) for k in ranked] for n in range(2)]
    got = list(userfn.merged([iter(s) for s in streams]))
    assert got == [(k, [n]) for k in ranked for n in range(2)]
    with pytest.raises(TypeError, match="mutually orderable"):
        list(userfn.merged([iter([(1, [1])] * 1500), iter([("a", [2])] * 1500)]))
