"""The map side's grouping, in process and without sockets: the C counting path,
the pure-Python one, and the checked per-record loop must give the same buffer."""

from __future__ import annotations

import array
import itertools
import os
from collections import defaultdict
from typing import Any

import pytest

import zmqmr
from zmqmr import inputs, mapside
from zmqmr.mapside import RecordFailed

UNSET = object()


@pytest.fixture(params=["speedups", "pure"])
def counting_path(request, monkeypatch):
    """Run a test once with the C extension and once as if it were not built."""
    if request.param == "pure":
        monkeypatch.setattr(mapside, "speedups", None)
    return request.param


def test_the_extension_is_built():
    # zmqmr works without it (the "pure" runs prove that), but the map side is
    # about twice as slow: an install that silently lost it should not pass.
    assert mapside.speedups is not None, (
        "zmqmr._speedups was not compiled (is a C compiler and Python.h present?)"
    )


def map_side(
    mapper,
    records: list[tuple[Any, Any]],
    combiner=None,
    batch: int = 100,
    skip: set[int] | None = None,
    spill_records: int = 400_000,
) -> tuple[dict[Any, list[Any]], int, int, dict[str, int], list[dict[Any, list[Any]]]]:
    """The executor's record loop over ``records`` cut into batches of ``batch``."""
    reader = inputs.SplitReader(iter(()), len(records))
    reader._batches = inputs._list_batches(reader, records, batch)
    counters: dict[str, int] = {}
    spills: list[dict[Any, list[Any]]] = []
    previous = zmqmr.userfn.counting(counters)
    try:
        buf, n_in, n_out = mapside.map_records(
            mapper,
            combiner,
            reader,
            skip or set(),
            counters,
            lambda b: spills.append(dict(b)),
            spill_at=spill_records,
            progress=lambda fraction: None,
        )
    finally:
        zmqmr.userfn.counting(previous)
    return buf, n_in, n_out, counters, spills


def typed(values) -> list[tuple[str, str]]:
    """A multiset of values that tells 1, 1.0 and True apart."""
    return sorted((type(v).__name__, repr(v)) for v in values)


def expected_groups(mapper, records) -> dict[Any, list[tuple[str, str]]]:
    groups: dict[Any, list[Any]] = defaultdict(list)
    for key, value in records:
        for k, v in zmqmr.userfn.output_pairs(mapper(key, value)):
            groups[k].append(v)
    return {k: typed(vs) for k, vs in groups.items()}


def total(x: Any, y: Any) -> Any:
    return x + y


def combine_sum(key, values):
    return sum(values)


LINES = [(i, " ".join(f"w{(i * 7 + j) % 13}" for j in range(i % 9))) for i in range(1000)]


def words(key, line):
    for w in line.split():
        yield w, 1


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_word_count_with_a_combiner_sums_exactly(counting_path, batch):
    buf, n_in, n_out, _, _ = map_side(words, LINES, combiner=combine_sum, batch=batch)
    want: dict[str, int] = defaultdict(int)
    for _, line in LINES:
        for w in line.split():
            want[w] += 1
    assert {k: sum(vs) for k, vs in buf.items()} == want
    assert n_in == len(LINES) and n_out == sum(want.values())


MAPPERS = {
    "one value": lambda k, v: [(k % 5, 1), (k % 3, 1)],
    "ints that vary": lambda k, v: [(k % 5, k % 4)],
    "one big int": lambda k, v: [(k % 5, 10**30)],
    "1 then True": lambda k, v: [(k % 5, 1 if k < 500 else True)],
    "equal values of several types": lambda k, v: [
        (k % 4, [1, 1.0, True, 0.0, -0.0, "1", b"1", None][k % 8])
    ],
    "1, 1.0 and True under one key": lambda k, v: [(k % 2, [1, 1.0, True][k % 3])],
    "1 and True under one key, no floats": lambda k, v: [(k % 2, 1 if k % 3 else True)],
    "floats": lambda k, v: [(k % 3, 0.0 if k % 2 else -0.0)],
    "lists as pairs": lambda k, v: [[k % 3, 1]],
    "dict outputs": lambda k, v: {k % 3: 1},
    "None outputs": lambda k, v: None if k % 2 else [(k % 3, "x")],
    "tuple keys": lambda k, v: [((k % 3, "a"), 1)],
    "a value switch mid-batch": lambda k, v: [(k % 3, "a" if k != 555 else "b")],
    "mutable values": lambda k, v: [(k % 3, [k])],
}


@pytest.mark.parametrize("name", sorted(MAPPERS))
@pytest.mark.parametrize("combiner", [None, "repr-list"])
def test_buffer_holds_exactly_the_emitted_values(counting_path, name, combiner):
    seen: list[int] = []

    def mapper(key, value):
        seen.append(key)
        return MAPPERS[name](key, value)

    records = [(i, i) for i in range(1000)]
    if combiner is None:
        buf, _, n_out, _, _ = map_side(mapper, records)
        got = {k: typed(vs) for k, vs in buf.items()}
        assert got == expected_groups(MAPPERS[name], records)
    else:
        # A combiner that keeps the typed multiset, so nothing can hide in a sum.
        def keep(key, values):
            out = []
            for v in values:
                out.extend(v if isinstance(v, Bag) else [v])
            return Bag(out)

        buf, _, n_out, _, _ = map_side(mapper, records, combiner=keep)
        got = {}
        for k, vs in buf.items():
            flat: list[Any] = []
            for v in vs:
                flat.extend(v if isinstance(v, Bag) else [v])
            got[k] = typed(flat)
        assert got == expected_groups(MAPPERS[name], records)
    assert seen == list(range(1000)), "a record was mapped twice, or not at all"
    assert n_out == sum(len(vs) for vs in expected_groups(MAPPERS[name], records).values())


class Bag(list):
    """A combiner's partial result, told apart from a user's list value."""


def test_mapper_failure_names_its_record_and_maps_nothing_twice(counting_path):
    seen: list[int] = []

    def mapper(key, value):
        seen.append(key)
        zmqmr.increment("calls")
        if key == 437:
            raise ValueError("bad record")
        yield key % 3, 1

    with pytest.raises(RecordFailed) as info:
        map_side(mapper, [(i, i) for i in range(1000)])
    assert info.value.index == 437
    assert isinstance(info.value.__cause__, ValueError)
    assert seen == list(range(438))


def test_side_effects_and_counters_happen_once_per_record_across_every_switch(counting_path):
    # The results switch from one value to many, to dicts, to float values and
    # back, within batches and across them: each switch hands the rest of the
    # result over to the next path, which must not call the mapper again.
    def mapper(key, value):
        zmqmr.increment("calls")
        if key % 97 == 5:
            return {key % 3: 1}
        if key > 600:
            yield key % 3, float(key % 2)
        yield key % 7, 1
        if key > 300:
            yield key % 5, key % 4

    records = [(i, i) for i in range(1000)]
    buf, n_in, _, counters, _ = map_side(mapper, records, batch=64)
    assert counters["calls"] == 1000 and n_in == 1000
    assert {k: typed(vs) for k, vs in buf.items()} == expected_groups(mapper, records)


@pytest.fixture(params=[1, 5, 65536])
def pairs_chunk(request, monkeypatch):
    """Run a test with the pair-counting path reading chunks of several sizes."""
    monkeypatch.setattr(mapside, "PAIRS_CHUNK", request.param)
    return request.param


BAD_AT = 777


def switching(bad):
    """A mapper of one value, then of several, then a bad result or pair at BAD_AT."""

    def mapper(key, value):
        if key == BAD_AT:
            return bad(key)
        return [(key % 11, 1), (key % 3, 1 if key < 300 else key % 4)]

    return mapper


def raising_midway(key):
    yield key % 3, 1
    raise KeyError("midway")


BAD_RESULTS = {
    "not a pair": (lambda k: [(k % 3, 1), "ab"], TypeError, "pair"),
    "a triple": (lambda k: [(k % 3, 1, 2)], TypeError, "pair"),
    "a str result": (lambda k: "ab", TypeError, "returned a str"),
    "an int result": (lambda k: 5, TypeError, "returned int"),
    "an unhashable key": (lambda k: [(k % 3, 1), ([k], 1)], TypeError, "unhashable key"),
    "an error midway": (raising_midway, KeyError, "midway"),
}


@pytest.mark.parametrize("name", sorted(BAD_RESULTS))
@pytest.mark.parametrize("batch", [1, 100, 1000])
def test_bad_results_are_pinned_on_their_record_on_every_path(
    counting_path, pairs_chunk, name, batch
):
    bad, kind, message = BAD_RESULTS[name]
    with pytest.raises(RecordFailed) as info:
        map_side(switching(bad), [(i, i) for i in range(1000)], batch=batch)
    assert info.value.index == BAD_AT
    assert isinstance(info.value.__cause__, kind)
    assert message in str(info.value.__cause__)


def test_a_combiner_error_is_pinned_on_the_record_that_reached_it(counting_path):
    def combiner(key, values):
        values = list(values)
        if any(isinstance(v, float) for v in values):
            raise ArithmeticError("no floats")
        return sum(values)

    def mapper(key, value):  # floats are never counted: they reach the combiner as pairs
        return [(0, 1.5 if key >= 500 else 1)] * 4

    with pytest.raises(RecordFailed) as info:
        map_side(mapper, [(i, i) for i in range(1000)], combiner=combiner)
    # the 32nd value of key 0 arrives at record 507 (500 + 31 // 4)
    assert info.value.index == 507
    assert isinstance(info.value.__cause__, ArithmeticError)


@pytest.mark.parametrize(
    "mapper, message",
    [
        (lambda k, v: ["ab"], "pair"),
        (lambda k, v: [(1, 2, 3)], "pair"),
        (lambda k, v: "ab", "returned a str"),
        (lambda k, v: [([k], 1)], "unhashable key of type list"),
    ],
)
def test_bad_outputs_fail_with_a_message_that_says_so(counting_path, mapper, message):
    with pytest.raises(RecordFailed) as info:
        map_side(mapper, [(i, i) for i in range(10)])
    assert info.value.index == 0
    assert message in str(info.value.__cause__)


def test_skipped_records_are_not_mapped(counting_path):
    seen: list[int] = []

    def mapper(key, value):
        seen.append(key)
        return [(key % 2, 1)]

    buf, n_in, _, counters, _ = map_side(mapper, [(i, i) for i in range(300)], skip={5, 150})
    assert 5 not in seen and 150 not in seen
    assert n_in == 298 and counters["zmqmr.skipped_records"] == 2
    assert sum(len(vs) for vs in buf.values()) == 298


def test_a_failure_after_a_skipped_record_is_pinned_on_its_own_record(counting_path):
    def mapper(key, value):
        if key in (5, 9):
            raise ValueError(key)
        return [(key % 2, 1)]

    with pytest.raises(RecordFailed) as info:
        map_side(mapper, [(i, i) for i in range(300)], skip={5})
    assert info.value.index == 9


def test_buffer_spills_past_its_key_budget(counting_path):
    records = [(i, i) for i in range(1000)]
    buf, _, _, _, spills = map_side(
        lambda k, v: [(k, 1)], records, combiner=combine_sum, spill_records=300
    )
    assert spills, "the buffer never spilled"
    keys = [k for s in [*spills, buf] for k in s]
    assert sorted(keys) == list(range(1000))


# -- the extension itself -------------------------------------------------------------------

needs_ext = pytest.mark.skipif(mapside.speedups is None, reason="zmqmr._speedups not built")


@needs_ext
def test_count_outputs_counts_keys_of_one_value():
    from zmqmr._speedups import count_outputs

    index: dict[Any, int] = {}
    counts = bytearray()
    outs = [[("a", 1), ("b", 1)], None, iter([("a", 1)]), (), [(10**20, 1)]]
    assert count_outputs(index, counts, outs, UNSET, UNSET) == (4, 1, None, UNSET)
    assert count_outputs(index, counts, [[("b", 1), ("c", 1)]], 1, UNSET) == (2, 1, None, UNSET)
    assert index == {"a": 0, "b": 1, 10**20: 2, "c": 3}
    assert list(array.array("q", bytes(counts))) == [2, 2, 1, 1]


@needs_ext
@pytest.mark.parametrize(
    "refused, value",
    [
        (("b", 2), UNSET),  # another value
        (("b", True), UNSET),  # equal but another type
        (("b", 1.0), UNSET),  # floats never qualify
        (("b", [1]), UNSET),  # nor mutable values
        (("b", 1), "x"),  # not the value asked for
        (["b", 1], UNSET),  # a list, not a tuple
        (("b", 1, 2), UNSET),
        (([1], 1), UNSET),  # an unhashable key
    ],
)
def test_count_outputs_stops_at_a_pair_that_does_not_qualify(refused, value):
    from zmqmr._speedups import count_outputs

    index: dict[Any, int] = {}
    counts = bytearray()
    first = [("a", 1)] if value is UNSET else [("a", value)]
    outs = iter([first, [("a", first[0][1]), refused, ("c", 9)], [("d", 1)]])
    n, got, stopped, pair = count_outputs(index, counts, outs, value, UNSET)
    # it stops inside the second result, and hands back exactly what it did not take
    assert (n, got) == (2, first[0][1])
    assert pair is refused
    assert list(stopped) == [("c", 9)]
    assert list(outs) == [[("d", 1)]]
    assert index == {"a": 0} and list(array.array("q", bytes(counts))) == [2]


@needs_ext
@pytest.mark.parametrize("result", [{"a": 1}, "ab", b"ab", 5])
def test_count_outputs_stops_at_a_result_that_does_not_qualify(result):
    from zmqmr._speedups import count_outputs

    outs = iter([[("a", 1)], result, [("b", 1)]])
    n, value, stopped, pair = count_outputs({}, bytearray(), outs, UNSET, UNSET)
    assert (n, value, pair) == (1, 1, UNSET)
    assert stopped is result
    assert list(outs) == [[("b", 1)]]


@needs_ext
def test_count_outputs_takes_equal_values_of_the_same_type():
    from zmqmr._speedups import count_outputs

    big = 10**30
    outs = [[("a", int(str(big)))], [("b", int(str(big)))]]  # equal, not identical
    assert count_outputs({}, bytearray(), outs, big, UNSET) == (2, big, None, UNSET)
    outs = [[("a", "x" * 3)], [("a", "".join("xxx"))]]
    assert count_outputs({}, bytearray(), outs, UNSET, UNSET) == (2, "xxx", None, UNSET)


class Unequal:
    def __hash__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        raise LookupError("eq")


@needs_ext
def test_count_outputs_lets_errors_through():
    from zmqmr._speedups import count_outputs

    def failing():
        yield "a", 1
        raise KeyError("mapper")

    index: dict[Any, int] = {}
    counts = bytearray()
    with pytest.raises(KeyError):
        count_outputs(index, counts, [failing()], UNSET, UNSET)
    assert index == {"a": 0} and len(counts) == 8  # made counts stay made
    with pytest.raises(LookupError):
        count_outputs({}, bytearray(), [[(Unequal(), 1), (Unequal(), 1)]], UNSET, UNSET)
    with pytest.raises(TypeError):
        count_outputs({}, bytearray(), 5, UNSET, UNSET)
    with pytest.raises(TypeError):
        count_outputs({}, b"", [], UNSET, UNSET)
    with pytest.raises(ValueError, match="disagree"):
        count_outputs({"a": 0}, bytearray(), [[("a", 1)]], UNSET, UNSET)
    with pytest.raises(ValueError, match="disagree"):
        count_outputs({}, bytearray(8), [[("a", 1)]], UNSET, UNSET)


def test_text_batches_give_the_lines_and_byte_offsets_of_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "READ_CHUNK", 16)
    lines = ["", "ascii", "naïve café", "\udcff raw", "x" * 40, "", "日本語", "last"]
    data = "\n".join(lines).encode("utf-8", "surrogateescape")
    path = os.path.join(tmp_path, "f.txt")
    with open(path, "wb") as f:
        f.write(data)
    got = list(inputs.read_split({"kind": "text", "path": path, "start": 0, "end": len(data)}))
    offsets = [
        0,
        *itertools.accumulate(len(ln.encode("utf-8", "surrogateescape")) + 1 for ln in lines),
    ]
    assert got == [((path, off), ln) for off, ln in zip(offsets, lines)]


def flat(buf) -> list[tuple[Any, Any]]:
    """Every (key, value) a buffer holds: its groups' and its appended pairs'."""
    return [(k, v) for k, vs in buf.items() for v in vs] + list(buf.pairs)


@pytest.mark.parametrize("values", ["distinct", "text"])
def test_a_record_emitting_more_pairs_than_the_spill_limit_spills_before_its_end(values):
    def mapper(key, n):
        for i in range(n):
            yield f"k{i % 3}", (i if values == "distinct" else f"v{i}")

    reader = inputs.SplitReader(iter(()), 2)
    reader._batches = inputs._list_batches(reader, [(0, 50_000), (1, 10)], 100)
    spills: list[list[tuple[Any, Any]]] = []
    buf, n_in, n_out = mapside.map_records(
        mapper,
        None,
        reader,
        set(),
        {},
        lambda b: spills.append(flat(b)),
        spill_at=4096,
        progress=lambda fraction: None,
    )
    assert n_in == 2 and n_out == 50_010
    assert len(spills) >= 10 and all(len(s) <= 4096 + 2 * 1024 for s in spills)
    got: dict = {}
    for part in [*spills, flat(buf)]:
        for k, v in part:
            got.setdefault(k, []).append(v)
    want: dict = {}
    for n in (50_000, 10):
        for i in range(n):
            want.setdefault(f"k{i % 3}", []).append(i if values == "distinct" else f"v{i}")
    assert got == want  # every value once, in record order
