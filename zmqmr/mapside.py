"""The map side of an attempt: from a split's records to one map output file.

    split records --mapper--> pairs --_Grouper--> key -> values (in memory)
        --past spill_records--> sorted runs on disk (``_spill``)
        --at the end--> R sorted segments in one map output file, each key's
                        values combined where the job has a combiner (runs
                        merged at most merge_fanin at a time: ``zmqmr.merge``)

The combiner's policy lives here and only here (``COMBINE_AT``,
``_combined_list``): a key's buffered values are combined when there are
COMBINE_AT of them, when counted values are flushed, and once more when the
segments are written. The mapper is called exactly once per record per
attempt, whatever path its pairs take, and an error is pinned on its record.
"""

from __future__ import annotations

import array
import bisect
import collections
import functools
import gc
import itertools
import operator
import os
import shutil
import types
from collections import _count_elements  # type: ignore[attr-defined]
from collections.abc import Callable, Iterator
from typing import Any

from . import layout, mapoutput, merge, native, packs, protocol, userfn
from .config import WorkerSettings
from .inputs import SplitReader, read_split

#: Without it the executor counts pairs in pure Python, more slowly.
speedups: Any = native.load()

#: With a combiner, a key's buffered values are combined when there are this many.
COMBINE_AT = 32


def _combined_list(combiner: Callable[..., Any] | None, key: Any, values: list[Any]) -> list[Any]:
    """A key's buffered values, combined into one value when there are several."""
    if combiner is None or len(values) < 2:
        return values
    return [userfn.combined(combiner, key, iter(values))]


class RecordFailed(Exception):
    """The mapper failed on record ``index`` of its split."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


_first = operator.itemgetter(0)
_second = operator.itemgetter(1)
#: Values that are interchangeable when equal: safe to count instead of keep.
_SCALARS = frozenset({int, str, bytes, bool, type(None)})
#: The pairs the pair-counting path takes at a time: few enough to stay in the
#: CPU's caches (and let Python reuse the tuples), enough to spread its checks.
PAIRS_CHUNK = 1024
#: Pairs counted before the counting path judges whether pairs repeat enough
#: to be worth counting (a sort's pairs never do).
PROBE_PAIRS = 8 * PAIRS_CHUNK
#: Below this share of repeated pairs in the probe, pairs are appended as they come.
MIN_REPEATS = 0.1

_UNSET = object()
_PLAIN = frozenset({list, tuple, types.GeneratorType})
_SEQUENCES = frozenset({list, tuple})


def _last_read(records: Iterator[Any], last: int) -> int:
    """The index of the record that ``records``, a list's iterator, gave last.

    ``last`` is the index of the list's final record.
    """
    return last - operator.length_hint(records)


def _skipping(
    mapper: Callable[[Any, Any], Any],
    keys: Iterator[Any],
    values: Iterator[Any],
    base: int,
    skip: set[int],
) -> Iterator[Any]:
    """The mapper's results for records ``base`` on, None for those in ``skip`` (not mapped)."""
    numbered = zip(itertools.count(base), keys, values)
    return (None if i in skip else mapper(k, v) for i, k, v in numbered)


class Buffer(dict[Any, list[Any]]):
    """A map task's buffer: key -> list of values, and ``pairs``: (key, value) pairs
    kept as the mapper made them, ungrouped (once pairs stopped repeating)."""

    def __init__(self) -> None:
        super().__init__()
        self.pairs: list[tuple[Any, Any]] = []
        #: The pairs' keys are known to be distinct (a dict's items), and the dict is empty.
        self.distinct = False

    def clear(self) -> None:
        super().clear()
        self.pairs.clear()
        self.distinct = False

    def __bool__(self) -> bool:
        return bool(len(self) or self.pairs)


def _tracked(keys: Iterator[Any], base: int, track: Any) -> Iterator[Any]:
    """``keys``, noting in ``track[1]`` the index of each before it is handed on.

    ``map(mapper, keys, values)`` takes a key, then calls the mapper: so while
    the mapper runs on a record (or its generator is read), ``track[1]`` is
    that record's index. One store per record: only for skip_bad_records.
    """
    for i, key in enumerate(keys, base):
        track[1] = i
        yield key


class _Grouper:
    """A map task's buffer: key -> list of values, plus run-length counts of values.

    Pairs whose values are interchangeable when equal are counted rather than
    kept: the combiner (or the buffer) later sees ``repeat(value, n)``, the same
    multiset. Three paths, tried in this order, give the same buffer:

    * ``single``: the keys of the pairs whose value is ``single_value`` (word
      count's 1), each with a slot in ``single_counts``, native int64s, counted
      in C by ``speedups.count_outputs``. Used while every pair of the task has
      that one value, when the ``_speedups`` extension is built.
    * ``pending``: (key, value) -> n, counted by ``collections``' own C counter
      over chunks of up to PAIRS_CHUNK pairs. Used while every pair is an exact
      2-tuple with an interchangeable value (and never ints with bools: 1 ==
      True would merge them).
    * ``plain``: the pairs themselves, appended to ``buf.pairs`` a chunk at a
      time, grouped only when partitions are sorted. Taken when the first
      PROBE_PAIRS counted pairs held fewer than MIN_REPEATS repeats (a sort, a
      join on unique keys): counting them would cost a dict entry each.
    * the checked loop, which keeps every value and pins a bad pair on its record.

    Each of the mapper's results is read exactly once: where one path stops,
    the next goes on from the result (or pair) it stopped at. So the mapper is
    called once per record, and its side effects and counters happen once.
    """

    def __init__(
        self,
        buf: Buffer,
        combiner: Callable[..., Any] | None,
        full: Callable[[], None] | None = None,
    ) -> None:
        self.buf = buf
        self.combiner = combiner
        #: Asked between chunks of pairs: spills the buffer if it is full (a
        #: record may emit millions of pairs; the buffer must not wait for its end).
        self.full = full
        self.single: dict[Any, int] = {}  # key -> its slot in single_counts
        self.single_counts = bytearray()  # per slot: times (key, single_value) was emitted
        self.single_value: Any = _UNSET
        self.use_single = speedups is not None
        self.pending: dict[tuple[Any, Any], int] = {}  # (key, value) -> times emitted
        self.pending_kinds: set[type] = set()  # the types of the values in pending
        self.countable = True  # False once a chunk's pairs could not all be counted
        self.counted = 0  # pairs counted into pending (the probe for repeats)...
        self.fresh = 0  # ...and how many of them were new to pending
        self.plain = False  # pairs go to buf.pairs as they come
        self.held = 0  # values buffered (counted ones included)
        self.emitted = 0  # pairs the mapper emitted

    def spill_past(self, spill_at: int, spill: Callable[[Buffer], None]) -> None:
        """Hand the buffer to ``spill`` and empty it once it holds ``spill_at`` keys
        (with a combiner, which keeps few values per key) or values (without)."""
        if (self.keys_held() if self.combiner is not None else self.held) >= spill_at:
            self.flush()
            spill(self.buf)
            self.buf.clear()
            self.held = 0

    def keys_held(self) -> int:
        """An upper bound on the distinct keys held: the buffer plus both counts."""
        return len(self.buf) + len(self.single) + len(self.pending) + len(self.buf.pairs)

    def flush(self) -> None:
        """Move the run-length counts into the buffer."""
        counts = array.array("q")
        counts.frombytes(self.single_counts)
        value = self.single_value
        self._flush_counts(zip(zip(self.single, itertools.repeat(value)), counts))
        self.single.clear()
        self.single_counts.clear()
        self._flush_counts(self.pending.items())
        self.pending.clear()
        self.pending_kinds.clear()

    def _flush_counts(self, counted: Any) -> None:
        buf, combiner = self.buf, self.combiner
        get = buf.get
        for (k, v), n in counted:
            lst = get(k)
            if lst is None:
                buf[k] = lst = []
            if combiner is not None:
                lst.append(userfn.combined(combiner, k, itertools.repeat(v, n)) if n > 1 else v)
            elif n == 1:
                lst.append(v)
            else:
                lst.extend(itertools.repeat(v, n))

    def add(self, results: Iterator[Any], first: int, where: Callable[[], int]) -> None:
        """Group the pairs of ``results``: the mapper's results for records ``first`` on.

        ``where()`` is the index of the record whose result was read last. A bad
        pair raises RecordFailed naming its record. The mapper's own errors
        propagate (with ``where()``, the caller knows the record).
        """
        if self.use_single:
            index, counts = self.single, self.single_counts
            n, self.single_value, stopped, pair = speedups.count_outputs(
                index, counts, results, self.single_value, _UNSET
            )
            self.held += n
            self.emitted += n
            if stopped is None:
                return
            # Not one value throughout: this task counts pairs from here on,
            # starting with what is left of the result counting stopped in.
            self.use_single = False
            first = where()
            rest = stopped if pair is _UNSET else itertools.chain((pair,), stopped)
            results = itertools.chain((rest,), results)
        self._add_results(results, first)

    def _add_results(self, results: Iterator[Any], first: int) -> None:
        while self.plain:  # results of tuples or lists of pairs, in C-level passes
            batch = list(itertools.islice(results, PAIRS_CHUNK))
            if not batch:
                return
            sequences = set(map(type, batch)) <= _SEQUENCES
            if sequences and self._append_pairs(list(itertools.chain.from_iterable(batch))):
                first += len(batch)
                if self.full is not None:
                    self.full()
                continue
            results = itertools.chain(batch, results)  # the loop below pins what is wrong
            break
        starts: list[int] = []  # per result, the position of its first pair in the stream
        chunk: list[Any] = []
        taken = 0  # pairs in earlier chunks
        mark, items = starts.append, userfn.result_items

        def opened(out: Any) -> Any:
            mark(taken + len(chunk))  # chunk grows pair by pair as extend() reads
            return out if type(out) in _PLAIN else items(out)

        stream = itertools.chain.from_iterable(map(opened, results))
        while True:
            chunk.extend(itertools.islice(stream, PAIRS_CHUNK))
            if not chunk:
                return
            if self.plain and self._append_pairs(chunk):
                taken += len(chunk)
                chunk.clear()
                if self.full is not None:
                    self.full()
                continue
            counted = self._count_pairs(chunk) if self.countable else 0
            if counted < len(chunk):
                pairs: Any = iter(chunk)
                if counted:
                    pairs.__setstate__(counted)  # the checked loop goes on from there
                try:
                    self._add_pairs(userfn.checked_pairs(pairs))
                except Exception as exc:
                    at = taken + len(chunk) - operator.length_hint(pairs) - 1
                    raise RecordFailed(first + bisect.bisect_right(starts, at) - 1) from exc
            taken += len(chunk)
            chunk.clear()
            if self.full is not None:
                self.full()

    def _count_pairs(self, chunk: list[Any]) -> int:
        """Count the chunk's pairs into ``pending`` while they qualify; return how many."""
        try:
            # Every pair's value type, not just the counted ones': counting
            # merges equal pairs, and (k, 1) would hide (k, 1.0) or (k, True).
            kinds = self.pending_kinds | set(map(type, map(_second, chunk)))
        except Exception:
            kinds = {object}  # an item that is not a sequence of two or more
        if (
            not kinds <= _SCALARS
            or (int in kinds and bool in kinds)
            or set(map(type, chunk)) != {tuple}
            or set(map(len, chunk)) != {2}
        ):
            self.countable = False
            return 0
        self.pending_kinds = kinds
        pairs = iter(chunk)
        distinct = len(self.pending)
        try:
            _count_elements(self.pending, pairs)
        except Exception:
            self.countable = False  # an unhashable key, or a key's own error
            taken = len(chunk) - operator.length_hint(pairs) - 1
        else:
            taken = len(chunk)
        self.held += taken
        self.emitted += taken
        before, self.counted = self.counted, self.counted + taken
        self.fresh += len(self.pending) - distinct
        if before < PROBE_PAIRS <= self.counted and self.fresh > (1 - MIN_REPEATS) * self.counted:
            self._go_plain()
        return taken

    def _go_plain(self) -> None:
        """From counting pairs to appending them: the counted ones move to ``buf.pairs``."""
        pending, pairs = self.pending, self.buf.pairs
        if max(pending.values(), default=1) == 1:
            pairs.extend(pending)  # each pair once: the dict's keys are the pairs
        else:
            pairs.extend(
                itertools.chain.from_iterable(itertools.starmap(itertools.repeat, pending.items()))
            )
        pending.clear()
        self.pending_kinds.clear()
        self.plain, self.countable = True, False

    def _append_pairs(self, chunk: list[Any]) -> bool:
        """Append the chunk's pairs to ``buf.pairs`` if all are 2-tuples with hashable
        keys (else the checked loop takes the chunk, and pins what is wrong)."""
        if set(map(type, chunk)) != {tuple} or set(map(len, chunk)) != {2}:
            return False
        try:
            collections.deque(map(hash, map(_first, chunk)), 0)
        except Exception:
            return False
        self.buf.pairs.extend(chunk)
        self.held += len(chunk)
        self.emitted += len(chunk)
        return True

    def _add_pairs(self, pairs: Any) -> None:
        buf, combiner = self.buf, self.combiner
        get = buf.get
        n = 0
        for k, v in pairs:
            lst = get(k)
            if lst is None:
                buf[k] = [v]
            else:
                lst.append(v)
                if combiner is not None and len(lst) >= COMBINE_AT:
                    combined = userfn.combined(combiner, k, iter(lst))
                    lst.clear()
                    lst.append(combined)
            n += 1
        self.held += n
        self.emitted += n


# -- the map driver ----------------------------------------------------------------


def split_bytes(split: protocol.Split, records_blob: bytes | None) -> int:
    """The bytes of input a split holds: its byte range of a text file (a compressed
    file's compressed size), its whole files' sizes, or its pickled records."""
    if split.kind == "text":
        return (split.end or 0) - (split.start or 0)
    if split.kind == "files":
        total = 0
        for path in split.paths or []:
            try:
                total += os.path.getsize(path)
            except OSError:
                pass
        return total
    return len(records_blob or b"")


def run_map(
    fns: dict[str, Any],
    job_id: str,
    task: int,
    attempt: int,
    spec: protocol.TaskSpec,
    records_blob: bytes | None,
    counters: dict[str, int],
    *,
    data_dir: str,
    settings: WorkerSettings,
    progress: Callable[[float], None],
    track: Any = None,
    pack: packs.PackWriter | None = None,
) -> protocol.Report:
    """Run one map attempt; its output is ``layout.map_output_path(...)``, or with a
    ``pack`` and at most ``settings.pack_bytes``, an entry of that pack.

    With ``track`` (a writable sequence of two ints), ``track[1]`` holds the
    index of the record being mapped while records are mapped, then -1.
    """
    assert spec.split is not None
    reader = read_split(spec.split.to_json(), records_blob)
    R = spec.num_reducers
    part = userfn.checked_partitioner(fns["partitioner"], R)
    runs_dir = layout.spill_dir(data_dir, job_id, task, attempt)
    spills: list[tuple[str, list[mapoutput.Segment]]] = []
    combiner = fns["combiner"]
    path = layout.map_output_path(data_dir, job_id, task, attempt)
    # The record loop makes millions of short-lived tuples and no cycles worth
    # chasing: the cyclic collector would only slow it down.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        split_mapper = fns.get("split_mapper")
        buf, n_in, n_out = (split_map_records if split_mapper else map_records)(
            split_mapper or fns["mapper"],
            combiner,
            reader,
            set(spec.skip),
            counters,
            lambda b: spills.append(_spill(b, part, combiner, R, runs_dir, len(spills))),
            spill_at=settings.spill_records,
            progress=progress,
            track=track,
        )
        if track is not None:
            track[1] = -1  # what fails from here on is not one record's fault
        counters["zmqmr.map_input_records"] = n_in
        counters["zmqmr.map_input_bytes"] = split_bytes(spec.split, records_blob)
        counters["zmqmr.map_output_records"] = n_out
        writer = mapoutput.MapOutputWriter(path, R, pack, settings.pack_bytes, task, attempt)
        try:
            if not spills:
                if combiner is not None:
                    for k, lst in buf.items():
                        buf[k] = _combined_list(combiner, k, lst)
                _write_partitions(writer, buf, part, combiner)
            else:
                if buf:
                    spills.append(_spill(buf, part, combiner, R, runs_dir, len(spills)))
                    buf.clear()
                spilled = sum(os.path.getsize(p) for p, _ in spills)
                fanin = merge.fanin_for(settings.merge_fanin, settings.reduce_memory)
                for r in range(R):
                    runs: list[Any] = [
                        merge.FileSegment(p, segs[r].offset, segs[r].length)
                        for p, segs in spills
                        if segs[r].length
                    ]
                    runs, written = merge.merge_down(runs, fanin, runs_dir, f"p{r}")
                    spilled += written
                    writer.write_segment(merge_runs(merge.streams(runs), combiner))
                counters[merge.SPILLED] = spilled
            segments = writer.close()
        except BaseException:
            writer.abort()
            raise
    except BaseException:
        shutil.rmtree(runs_dir, ignore_errors=True)  # a spill may have failed half made
        raise
    else:
        if spills:  # else there is no runs dir: not a system call per small map
            shutil.rmtree(runs_dir, ignore_errors=True)
    finally:
        if gc_was_enabled:
            gc.enable()
    return protocol.Report(
        segments=[
            protocol.Segment(r, s.length, s.groups) for r, s in enumerate(segments) if s.length
        ],
        bytes=writer.bytes_written,
    )


def map_records(
    mapper: Callable[[Any, Any], Any],
    combiner: Callable[..., Any] | None,
    reader: SplitReader,
    skip: set[int],
    counters: dict[str, int],
    spill: Callable[[Buffer], None],
    *,
    spill_at: int,
    progress: Callable[[float], None],
    track: Any = None,
) -> tuple[Buffer, int, int]:
    """Call the mapper on every record and group its pairs by key: a dict of lists.

    Records go in batches, through ``_Grouper``: while the pairs are of one
    immutable value (word count's ``(word, 1)``) their keys are counted in
    C, and the combiner later sees each key's values as ``repeat(value,
    n)``, the same multiset. The mapper is called once per record whatever
    path its pairs take, and an error is pinned on the record it came from.

    With a combiner a key's list is combined whenever it reaches COMBINE_AT
    values and the buffer spills past ``spill_at`` keys; without one it
    spills past ``spill_at`` values. Returns the buffer, the records read and
    the pairs emitted. With ``track``, ``track[1]`` is set to each record's
    index before the mapper is called on it (see ``_tracked``).
    """
    g = _Grouper(buf=Buffer(), combiner=combiner)
    g.full = lambda: g.spill_past(spill_at, spill)
    index = read = skipped = 0
    for keys, values in reader.batches():
        base, index = index, index + len(values)
        values_read = iter(values)  # read just after its key: it tells where the map is
        where = functools.partial(_last_read, values_read, index - 1)
        keys_in = iter(keys) if track is None else _tracked(iter(keys), base, track)
        results: Iterator[Any] = map(mapper, keys_in, values_read)
        dropped = sum(base <= r < index for r in skip) if skip else 0
        if dropped:
            skipped += dropped
            results = _skipping(mapper, keys_in, values_read, base, skip)
        try:
            g.add(results, base, where)
        except RecordFailed:
            raise
        except Exception as exc:
            raise RecordFailed(where()) from exc
        read += len(values)
        progress(reader.fraction())
        g.spill_past(spill_at, spill)
    g.flush()
    if skipped:
        counters["zmqmr.skipped_records"] = skipped
    return g.buf, read - skipped, g.emitted


#: Pairs of a split mapper grouped between checks of the buffer's size.
SPLIT_PAIRS_CHUNK = 16 * 1024
_DICT_ITEMS: Any = type({}.items())


class _SplitRecords:
    """The records of one split for a split mapper: ``records``, the iterator it gets.

    ``records`` leaves out the records to skip and reports progress after each
    batch; ``last()`` is the index of the record it gave last (the one being
    read when the split mapper failed). ``records`` is a chain of one ``zip``
    per batch, so handing a record over runs no Python code.
    """

    def __init__(
        self,
        reader: SplitReader,
        skip: set[int],
        progress: Callable[[float], None],
        track: Any = None,
    ) -> None:
        self._last: Callable[[], int] = lambda: -1
        self.records: Iterator[tuple[Any, Any]] = itertools.chain.from_iterable(
            self._batches(reader, skip, progress, track)
        )

    def last(self) -> int:
        """The index of the record given last, or -1 before the first."""
        return self._last()

    def _batches(
        self,
        reader: SplitReader,
        skip: set[int],
        progress: Callable[[float], None],
        track: Any,
    ) -> Iterator[Iterator[tuple[Any, Any]]]:
        index = 0
        for keys, values in reader.batches():
            base, index = index, index + len(values)
            values_read = iter(values)  # read just after its key: it tells where the map is
            self._last = functools.partial(_last_read, values_read, index - 1)
            keys_in = iter(keys) if track is None else _tracked(iter(keys), base, track)
            batch: Iterator[tuple[Any, Any]] = zip(keys_in, values_read)
            if skip and any(base <= r < index for r in skip):
                batch = itertools.compress(batch, [i not in skip for i in range(base, index)])
            yield batch
            progress(reader.fraction())


def split_map_records(
    split_mapper: Callable[[Iterator[tuple[Any, Any]]], Any],
    combiner: Callable[..., Any] | None,
    reader: SplitReader,
    skip: set[int],
    counters: dict[str, int],
    spill: Callable[[Buffer], None],
    *,
    spill_at: int,
    progress: Callable[[float], None],
    track: Any = None,
) -> tuple[Buffer, int, int]:
    """``map_records`` for a split mapper: one call over the split's records.

    Its pairs are grouped by the same ``_Grouper``, a chunk at a time so the
    buffer can spill; any failure is pinned on the record being read (and
    ``track[1]``, given, holds it).
    """
    g = _Grouper(buf=Buffer(), combiner=combiner)
    records = _SplitRecords(reader, skip, progress, track)
    try:
        out: Any = split_mapper(records.records)
        if isinstance(out, dict):
            out = out.items()
        if type(out) is _DICT_ITEMS:
            # A dict's items (a Counter's, say): pairs of distinct, hashable keys,
            # which need no check, no counting and no combining.
            g.buf.pairs = list(out)
            g.buf.distinct = True
            g.held = g.emitted = len(g.buf.pairs)
            g.spill_past(spill_at, spill)
            out = ()
        # Checked as they come, so a bad pair is pinned on the record being read
        # (the grouper reads ahead before it checks).
        pairs = userfn.output_pairs(out, "split_mapper")
        while True:
            before = g.emitted
            g.add(iter((itertools.islice(pairs, SPLIT_PAIRS_CHUNK),)), 0, records.last)
            if g.emitted == before:
                break
            g.spill_past(spill_at, spill)
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, RecordFailed) and exc.__cause__ else exc
        at = records.last()
        if at < 0:  # before the first record: nothing to pin it on
            raise cause from None
        raise RecordFailed(at) from cause
    g.flush()
    read = records.last() + 1  # a split mapper may stop reading early
    skipped = sum(r < read for r in skip)
    if skipped:
        counters["zmqmr.skipped_records"] = skipped
    return g.buf, read - skipped, g.emitted


def _partitioned(
    buf: Buffer, part: userfn.Partitioning, combiner: Callable[..., Any] | None
) -> list[list[tuple[Any, Any]]]:
    """The buffer's groups in R lists, each sorted by key, equal keys joined.

    Appended pairs become ``(key, (value,))`` groups, built in C (``zip``),
    and are joined with equal keys (theirs, or the dict's) after the sort.
    """
    items: list[tuple[Any, Any]] = list(buf.items())
    pairs, buf.pairs = buf.pairs, []  # the pairs go as soon as their groups are made
    appended = bool(pairs)
    items += zip(map(_first, pairs), zip(map(_second, pairs)))
    del pairs
    parts = part.split(items)
    del items
    for p in parts:
        userfn.sort_by_key(p)
    if appended:
        parts = [_joined(p, combiner) for p in parts]
    return parts


def _joined(
    groups: list[tuple[Any, Any]], combiner: Callable[..., Any] | None
) -> list[tuple[Any, Any]]:
    """Sorted groups with adjacent equal keys joined into one (their values combined)."""
    keys = list(map(_first, groups))
    if not any(map(operator.eq, keys, itertools.islice(keys, 1, None))):
        return groups  # no key twice: the common case, checked in C
    out: list[tuple[Any, Any]] = []
    for key, run in itertools.groupby(groups, key=_first):
        values = list(itertools.chain.from_iterable(map(_second, run)))
        out.append((key, _combined_list(combiner, key, values)))
    return out


def _spill(
    buf: Buffer,
    part: userfn.Partitioning,
    combiner: Callable[..., Any] | None,
    R: int,
    runs_dir: str,
    n: int,
) -> tuple[str, list[mapoutput.Segment]]:
    """Write the buffer as one sorted run of R segments; returns its path and segments."""
    os.makedirs(runs_dir, exist_ok=True)
    path = os.path.join(runs_dir, f"run{n}")
    writer = mapoutput.MapOutputWriter(path, R)
    _write_partitions(writer, buf, part, combiner)
    return path, writer.close()


def _write_partitions(
    writer: mapoutput.MapOutputWriter,
    buf: Buffer,
    part: userfn.Partitioning,
    combiner: Callable[..., Any] | None,
) -> None:
    """The buffer as R sorted segments: without a combiner, or with one and only
    pairs of distinct keys (a split mapper's dict: nothing to combine), its pairs
    written as they are (``write_pairs``: flat parts where keys do not repeat, so
    no group is built for them), else as groups, a key's values joined in one."""
    if buf.pairs and (combiner is None or (buf.distinct and not len(buf))):
        parts = _sorted_pairs(buf, part)
        parts.reverse()
        while parts:
            writer.write_pairs(parts.pop(), consume=True)  # freed as written
    else:
        for groups in _partitioned(buf, part, combiner):
            writer.write_segment(groups)


def _sorted_pairs(buf: Buffer, part: userfn.Partitioning) -> list[list[tuple[Any, Any]]]:
    """The buffer's pairs in R lists, each sorted by key (stably: a key's values in
    the order ``_partitioned`` gives them), no key joined and no group built.

    The dict's groups (made before pairs stopped repeating) go first, as pairs.
    A partitioner known to keep key order cuts one sorted list at its
    boundaries; any other is called once per pair, then each list is sorted.
    """
    pairs, buf.pairs = buf.pairs, []
    if len(buf):
        held = [(k, v) for k, vs in buf.items() for v in vs]
        dict.clear(buf)
        held += pairs
        pairs = held
        del held
    parts = part.split_sorted(pairs)
    if parts is None:
        parts = part.split(pairs)
        del pairs
        for p in parts:
            userfn.sort_by_key(p)
    return parts


def merge_runs(
    streams: list[Iterator[Any]], combiner: Callable[..., Any] | None
) -> Iterator[tuple[Any, list[Any]]]:
    """One partition's groups from several sorted runs (``merge.streams``).

    Without a combiner the groups pass through as they come: a key's values
    stay in runs, one after the other, and are never joined into one list.
    With one, a key's values from every run are combined as they stream by.
    """
    pieces = userfn.merged(streams)
    if combiner is None:
        yield from pieces
        return
    for key, group in itertools.groupby(pieces, key=operator.itemgetter(0)):
        runs = iter(group)
        first = next(runs)[1]
        second = next(runs, None)
        if second is None and len(first) < 2:
            yield key, first
            continue
        values = itertools.chain(
            first,
            () if second is None else second[1],
            itertools.chain.from_iterable(vs for _, vs in runs),
        )
        yield key, [userfn.combined(combiner, key, values)]
