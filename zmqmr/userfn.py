"""Calling user code: pairs, partitioners, key order, grouping, counters.

The executor and ``run_serial`` both go through these helpers, so the cluster
and the oracle check the same things and fail with the same messages.
Imports: the standard library, ``partitioning``, ``ordering``, and ``records`` and
``parts`` for the limits of counters.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import operator
import types
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import Any

from .ordering import Ordered, OrderedParts, sort_items
from .partitioning import Partitioner, Partitioning
from .partitioning import default_partitioner as default_partitioner  # zmqmr's public name
from .partitioning import stable_hash as stable_hash
from .parts import MAX_COUNTERS
from .records import MAX_INT, MAX_NAME

Pair = tuple[Any, Any]

_first = itemgetter(0)
_second = itemgetter(1)

# -- counters -----------------------------------------------------------------

_counters: dict[str, int] | None = None
_per_task = True


#: Counter names one task may use (zmqmr's own counters take the rest of MAX_COUNTERS).
MAX_USER_COUNTERS = MAX_COUNTERS - 64


def increment(name: str, n: int = 1) -> None:
    """Add ``n`` to the user counter ``name`` of the running task.

    Outside a task (calling a mapper by hand, say) it does nothing. Totals
    count each task once, however many attempts of it ran. A name has 1 to
    ``MAX_NAME`` characters; a task counts at most ``MAX_USER_COUNTERS`` names,
    each task's total within 64 bits (ValueError past them, so the attempt
    fails saying why); a job's totals may pass 64 bits.
    """
    if not isinstance(name, str):
        raise TypeError(f"counter name must be a str, got {type(name).__name__}")
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"counter increment must be an int, got {type(n).__name__}")
    if _counters is not None:
        value = _counters.get(name)
        if value is None:
            if not 0 < len(name) <= MAX_NAME:
                raise ValueError(f"counter name {name[:40]!r}: 1 to {MAX_NAME} characters")
            if _per_task and len(_counters) >= MAX_USER_COUNTERS:
                raise ValueError(
                    f"counter {name[:40]!r}: a task counts at most {MAX_USER_COUNTERS} names"
                )
            value = 0
        value += n
        if _per_task and not -MAX_INT <= value <= MAX_INT:
            raise ValueError(f"counter {name[:40]!r}: a task's total must fit in 64 bits")
        _counters[name] = value


def counting(counters: dict[str, int] | None, per_task: bool = True) -> dict[str, int] | None:
    """Make ``counters`` the running task's counters; return the previous ones.

    ``per_task``: they are one task's, held to what one attempt may report (at
    most ``MAX_USER_COUNTERS`` names, each total within 64 bits); ``run_serial``
    counts a whole job in one dict, as the master's totals do, without them.
    """
    global _counters, _per_task
    previous, _counters, _per_task = _counters, counters, per_task
    return previous


# -- partitioners: see partitioning.py ----------------------------------------------


def checked_partitioner(partitioner: Partitioner | None, num_partitions: int) -> Partitioning:
    """``key -> partition`` with the user's partitioner's answer checked (at every R)."""
    return Partitioning(partitioner, num_partitions)


# -- pairs, order, groups ---------------------------------------------------------


def bad_pair(fn: str, pair: Any) -> TypeError:
    return TypeError(f"{fn} must yield (key, value) pairs, got {type(pair).__name__} {pair!r:.80}")


def result_items(out: Any, fn: str = "mapper") -> Iterable[Any]:
    """What a mapper's result holds, unchecked: a dict's items, or the iterable itself.

    None holds nothing; a str, bytes or anything not iterable is an error.
    """
    if out is None:
        return ()
    if isinstance(out, dict):
        return out.items()
    if isinstance(out, (str, bytes)):
        raise TypeError(
            f"{fn} returned a {type(out).__name__}; it must return or yield (key, value) pairs"
        )
    try:
        return iter(out)
    except TypeError:
        raise TypeError(
            f"{fn} returned {type(out).__name__}; it must return or yield (key, value) pairs"
        ) from None


def checked_pairs(items: Iterable[Any], fn: str = "mapper") -> Iterator[Pair]:
    """``items``, each checked to be a pair (a 2-list becomes a tuple) with a hashable key."""
    for pair in items:
        if type(pair) is not tuple or len(pair) != 2:
            if isinstance(pair, (tuple, list)) and len(pair) == 2:
                pair = (pair[0], pair[1])
            else:
                raise bad_pair(fn, pair)
        try:
            hash(pair[0])
        except TypeError:
            raise TypeError(
                f"{fn} yielded an unhashable key of type {type(pair[0]).__name__}: {pair[0]!r:.80}"
            ) from None
        yield pair


def output_pairs(out: Any, fn: str = "mapper") -> Iterator[Pair]:
    """The pairs a mapper returned or yielded, each checked to be a pair with a hashable key."""
    return checked_pairs(result_items(out, fn), fn)


def unorderable(keys: Iterable[Any]) -> TypeError:
    """The error for keys that cannot be sorted, naming two types that clash."""
    samples: dict[type, Any] = {}
    for key in keys:
        samples.setdefault(type(key), key)
        if len(samples) > 32:
            break
    items = list(samples.items())
    for (ta, a), (tb, b) in itertools.combinations(items, 2):
        try:
            a < b  # noqa: B015 - probing for the TypeError
            b < a  # noqa: B015
        except TypeError:
            return TypeError(
                f"keys of one job must be mutually orderable: cannot compare "
                f"{ta.__name__} with {tb.__name__} (e.g. {a!r:.40} and {b!r:.40})"
            )
    for t, a in items:
        try:
            a < a  # noqa: B015, PLR0124
        except TypeError:
            return TypeError(
                f"keys of one job must be mutually orderable: cannot compare "
                f"{t.__name__} with {t.__name__}"
            )
    return TypeError("keys of one job must be mutually orderable")


def sort_by_key(items: list[Pair]) -> None:
    """Sort ``(key, x)`` pairs by key in place (in a total order: see ``ordering``), or
    raise an error naming the key types."""
    try:
        sort_items(items)
    except TypeError:
        raise unorderable(k for k, _ in items) from None


#: What a reducer or combiner may not return: its result travels, and these do not pickle.
_NOT_A_VALUE = (types.GeneratorType, types.AsyncGeneratorType, types.CoroutineType)


def one_value(fn: str, key: Any, out: Any) -> Any:
    """``out``, what ``fn`` (the reducer or the combiner) returned for ``key``, if it is a value."""
    if isinstance(out, _NOT_A_VALUE):
        if isinstance(out, (types.GeneratorType, types.CoroutineType)):
            out.close()  # never started: closing runs none of its code, and nothing warns
        raise TypeError(
            f"{fn} returned a {type(out).__name__} for key {key!r:.80}; it must return one "
            f"value: use return, not yield (return a list to keep several values)"
        )
    return out


def combined(combiner: Callable[[Any, Iterator[Any]], Any], key: Any, values: Iterator[Any]) -> Any:
    """The combiner's value for ``key``, checked: every call site of a combiner goes here."""
    return one_value("combiner", key, combiner(key, values))


def reduce_groups(
    reducer: Callable[[Any, Iterator[Any]], Any],
    groups: Iterable[tuple[Any, list[Any]]],
    counters: dict[str, int] | None = None,
) -> Iterator[Pair]:
    """Run ``reducer`` on sorted ``(key, values)`` groups, merging equal adjacent keys.

    Each group's values list is one run of values for its key (from one map
    output, or one key of the oracle's dict); equal keys from several runs are
    handed to one reducer call as one iterator.
    """
    for key, runs in itertools.groupby(groups, key=_first):
        values = itertools.chain.from_iterable(vs for _, vs in runs)
        if counters is not None:
            counters["zmqmr.reduce_input_groups"] = counters.get("zmqmr.reduce_input_groups", 0) + 1
        yield key, one_value("reducer", key, reducer(key, values))


def sorted_groups(groups: dict[Any, list[Any]]) -> list[tuple[Any, list[Any]]]:
    """The ``(key, values)`` items of a dict of groups (``mapoutput.merge_segments``),
    sorted by key (unorderable keys named): what ``merged`` gives of the same groups,
    each key once."""
    items = list(groups.items())
    sort_by_key(items)
    return items


#: Groups a merge takes from a stream at a time (a block part holds at most 1024)...
MERGE_BATCH = 1024
#: ...and values (a group's key counted as one): a hot key's runs, each of
#: thousands of values, are taken a few at a time.
MERGE_VALUES = 16384


def _batch_size(groups: list[Any]) -> int:
    """How many groups to take next from a stream whose last groups were ``groups``."""
    if not groups:
        return MERGE_BATCH
    try:
        per_group = (sum(map(len, map(_second, groups))) + len(groups)) / len(groups)
    except TypeError:
        return MERGE_BATCH
    return max(1, min(MERGE_BATCH, int(MERGE_VALUES / per_group)))


def merged(streams: list[Iterator[Any]]) -> Iterator[tuple[Any, list[Any]]]:
    """Streams of ``(key, values)`` sorted by order key (``ordering.ordered_groups``)
    merged by key, keys unwrapped; unorderable keys named.

    A stream gives groups, or lists of groups (``merge.streams``: a decoded part of
    a block at a time). A key may come in several consecutive groups (from
    several streams, or spanning blocks of one); ``reduce_groups`` hands their
    values over as one iterator. Equal keys come in stream order, as from
    ``heapq.merge``.
    """
    for batch in merged_batches(streams):
        yield from batch


def merged_batches(streams: list[Iterator[Any]]) -> Iterator[list[tuple[Any, list[Any]]]]:
    """What ``merged`` gives, in sorted lists (a few thousand groups each, at most)."""
    # Streams of ``ordering.ordered_parts`` say whether they wrapped a key: where
    # none did, no batch is searched for one.
    known = all(type(s) is OrderedParts for s in streams)
    try:
        for batch in _merged_batches(streams):
            if known and not any(s.wrapped for s in streams):  # type: ignore[attr-defined]
                yield batch
                continue
            if Ordered in set(map(type, map(_first, batch))):
                batch = [(k.key, vs) if type(k) is Ordered else (k, vs) for k, vs in batch]
            yield batch
    except TypeError as exc:
        if "not supported between instances" not in str(exc):
            raise
        raise TypeError(f"keys of one job must be mutually orderable: {exc}") from None


Reader = Callable[[int], tuple[list[Any], bool]]


def _opened(stream: Iterator[Any]) -> tuple[list[Any], Reader, bool]:
    """A stream's first groups, how to read on (``read(n)``: about ``n`` more groups,
    and whether the stream ended), and whether it ended already."""
    first = next(stream, None)
    if first is None:
        return [], lambda n: ([], True), True
    if type(first) is list:  # a stream of parts: a whole part at a time, whatever n

        def read_part(n: int) -> tuple[list[Any], bool]:
            part = next(stream, None)
            return ([], True) if part is None else (part, False)

        return list(first), read_part, False

    def read_groups(n: int) -> tuple[list[Any], bool]:
        more = list(itertools.islice(stream, n))
        return more, len(more) < n

    return [first], read_groups, False


def _merged_batches(streams: list[Iterator[Any]]) -> Iterator[list[Any]]:
    """Sorted lists of groups which, one after the other, are the streams merged.

    A stream of groups is read MERGE_BATCH groups at a time (fewer for groups
    of many values), a stream of parts a part at a time. A round takes, from
    every buffer, the groups with keys below the smallest last key of the
    streams not yet at their end: those buffers hold all the groups of such
    keys that are left, so one stable sort of the taken groups (timsort
    merging sorted runs, with a C key function) puts them in merged order,
    equal keys in stream order. The stream that set the bound reads more.
    """
    opened = [_opened(s) for s in streams]
    bufs = [o[0] for o in opened]
    reads = [o[1] for o in opened]
    ended = [o[2] for o in opened]
    del opened
    while True:
        for i, b in enumerate(bufs):
            while not b and not ended[i]:  # an empty part, or a buffer taken whole
                more, ended[i] = reads[i](MERGE_BATCH)
                b += more
        live = [i for i, b in enumerate(bufs) if b]
        if not live:
            return
        open_ = [i for i in live if not ended[i]]
        if not open_:  # every stream is whole in its buffer
            out = [g for i in live for g in bufs[i]] if len(live) > 1 else bufs[live[0]]
            out.sort(key=_first)
            yield out
            return
        bound = min(bufs[i][-1][0] for i in open_)
        out = []
        for i in live:
            b = bufs[i]
            cut = bisect.bisect_left(b, bound, key=_first)
            if cut:
                out += b[:cut]
                del b[:cut]
        if out:
            if len(live) > 1:
                out.sort(key=_first)
            yield out
        else:
            # Every buffer starts at the bound: one key's runs across streams (a hot
            # key's). They go in stream order, the first stream's all before the
            # next's, read as they go: reading on for a bound no group passes
            # would hold the key's every value.
            i = next(i for i in live if not bound < bufs[i][0][0])
            b = bufs[i]
            cut = bisect.bisect_right(b, bound, key=_first)
            runs, b[:cut] = b[:cut], []
            yield runs
            if not b and not ended[i]:
                more, ended[i] = reads[i](_batch_size(runs))
                b += more
            continue
        for i in open_:
            b = bufs[i]
            if not b or not bound < b[-1][0]:  # the bound's stream: all its groups are >= bound
                more, ended[i] = reads[i](_batch_size(b or out[-1:]))
                b += more


def reduce_batches(
    reducer: Callable[[Any, Iterator[Any]], Any],
    batches: Iterable[list[tuple[Any, Any]]],
    counters: dict[str, int],
) -> Iterator[tuple[list[Any], list[Any]]]:
    """``reduce_groups`` over sorted batches of groups, a batch at a time: the keys
    reduced and the reducer's values, as two lists.

    A batch whose keys are distinct (the common case of a sort, checked in C)
    calls the reducer through ``map``, each group's values handed over as its
    list's own iterator, and checks the values in one pass; a batch where a
    key repeats goes through ``reduce_groups``. A batch's last key may go on in
    the next batches (a hot key's runs): its values are streamed to one
    reducer call from the batches as they come, as ``reduce_groups`` would,
    never gathered. The reducer is called once per key, in key order, with the
    same values in the same order whichever way.
    """
    name = "zmqmr.reduce_input_groups"
    batches = iter(batches)
    groups = next(batches, None)
    while groups is not None:
        if not groups:
            groups = next(batches, None)
            continue
        keys = list(map(_first, groups))
        j = len(keys) - 1
        last = keys[j]
        while j and keys[j - 1] == last:
            j -= 1
        if j:
            del keys[j:]
            if any(map(operator.eq, keys, itertools.islice(keys, 1, None))):
                done = list(reduce_groups(reducer, groups[:j], counters))
                yield list(map(_first, done)), list(map(_second, done))
            else:
                runs = map(iter, map(_second, itertools.islice(groups, j)))
                values = list(map(reducer, keys, runs))
                if not _NOT_A_VALUE_TYPES.isdisjoint(map(type, values)):
                    bad = [(k, v) for k, v in zip(keys, values) if type(v) in _NOT_A_VALUE_TYPES]
                    for _, v in bad[1:]:
                        _close(v)  # never started: nothing of theirs runs
                    one_value("reducer", *bad[0])
                counters[name] = counters.get(name, 0) + len(keys)
                yield keys, values
        run = _KeyRun(last, groups[j:], batches)
        del groups, keys
        value = one_value("reducer", last, reducer(last, run.values()))
        groups = run.rest()  # what the reducer did not read of the key is passed over
        counters[name] = counters.get(name, 0) + 1
        yield [last], [value]


class _KeyRun:
    """One key's groups: those at the end of a batch, then those at the start of
    the batches after it, read as its values are; ``rest()``, the batch after them."""

    def __init__(self, key: Any, groups: list[Any], batches: Iterator[list[Any]]) -> None:
        self.key = key
        self.groups = groups
        self.batches = batches
        self.after: list[Any] | None = None
        self.done = False

    def _runs(self) -> Iterator[Any]:
        yield from self.groups
        self.groups = []
        key = self.key
        for batch in self.batches:
            if batch and not operator.eq(batch[0][0], key):  # the key ended with its batch
                self.after = batch
                break
            same = list(map(operator.eq, map(_first, batch), itertools.repeat(key)))
            n = same.index(False) if False in same else len(batch)
            if n < len(batch):
                self.after = batch[n:]
                yield from batch[:n]
                break
            yield from batch
        self.done = True

    def values(self) -> Iterator[Any]:
        self._it = self._runs()
        return itertools.chain.from_iterable(map(_second, self._it))

    def rest(self) -> list[Any] | None:
        if not self.done:
            collections.deque(self._it, 0)
        after, self.after = self.after, None
        return after if after is not None else next(self.batches, None)


_NOT_A_VALUE_TYPES = frozenset(_NOT_A_VALUE)


def _close(value: Any) -> None:
    """Close a generator or coroutine a reducer returned, which is never run."""
    if isinstance(value, (types.GeneratorType, types.CoroutineType)):
        value.close()
