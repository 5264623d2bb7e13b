"""The executor: a process that runs one attempt at a time for its worker.

User code runs here and only here. A map attempt reads its split, calls the
mapper on each record, groups values by key in memory (calling the combiner on
long lists), spills sorted runs to disk past a budget, and writes one map
output file with R segments. A reduce attempt fetches its segment of every map
output (several at a time, from disk past a memory budget), merges the sorted
streams, groups by key, calls the reducer, and commits its part file by
write-then-rename.

The worker talks to its executors over a multiprocessing pipe, with the typed
objects of ``zmqmr.protocol``::

    worker -> executor: RunAttempt, Relocate (while a reduce waits), DropJob
    executor -> worker: AttemptProgress, Done, Failed, FetchFailed

An executor dies with its worker: ``PR_SET_PDEATHSIG`` covers SIGKILL of the
worker, and a closed pipe covers the rest.
"""

from __future__ import annotations

import array
import bisect
import concurrent.futures
import ctypes
import functools
import gc
import itertools
import operator
import os
import shutil
import signal
import sys
import time
import traceback
import types
from collections import _count_elements  # type: ignore[attr-defined]
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from . import protocol, shuffle, userfn
from .config import WorkerSettings
from .errors import ShuffleError
from .inputs import SplitReader, read_split
from .job import part_name, temp_part_name
from .security import MEMBER, Keys, load_keys

speedups: Any
try:
    from . import _speedups as speedups
except ImportError:  # not built: the executor counts pairs in pure Python, more slowly
    speedups = None
if os.environ.get("ZMQMR_NO_SPEEDUPS"):  # to measure or debug the pure-Python path
    speedups = None

PR_SET_PDEATHSIG = 1
PROGRESS_EVERY = 0.5  # seconds between progress reports
#: With a combiner, a key's buffered values are combined when there are this many.
COMBINE_AT = 32
FETCH_PARALLEL = 4
#: A reduce whose fetched segments are all in memory and hold at most this many
#: bytes groups them in a dict (decoded, they take a few times this much).
HASH_GROUP_BYTES = 16 * 1024 * 1024


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


class RecordFailed(Exception):
    """The mapper failed on record ``index`` of its split."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def attempt_paths(
    data_dir: str, job_id: str, kind: str, task: int, attempt: int, output_dir: str | None
) -> list[str]:
    """Every file or directory an attempt may leave behind (for cleanup on cancel)."""
    jdir = shuffle.job_dir(data_dir, job_id)
    if kind == "map":
        base = os.path.join(jdir, f"m{task:05d}-a{attempt}")
        return [base + ".out", base + ".out.tmp", base + ".spills"]
    paths = [os.path.join(jdir, f"r{task:05d}-a{attempt}")]
    if output_dir:
        paths.append(os.path.join(output_dir, temp_part_name(task, attempt)))
    return paths


def remove_paths(paths: list[str]) -> None:
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


_second = operator.itemgetter(1)
#: Values that are interchangeable when equal: safe to count instead of keep.
_SCALARS = frozenset({int, str, bytes, bool, type(None)})
#: The pairs the pair-counting path takes at a time: few enough to stay in the
#: CPU's caches (and let Python reuse the tuples), enough to spread its checks.
PAIRS_CHUNK = 1024

_UNSET = object()
_PLAIN = frozenset({list, tuple, types.GeneratorType})


def _last_read(records: Iterator[Any], last: int) -> int:
    """The index of the record that ``records``, a list's iterator, gave last.

    ``last`` is the index of the list's final record.
    """
    return last - operator.length_hint(records)


def _skipping(
    mapper: Callable[[Any, Any], Any],
    keys: Iterator[Any],
    values: list[Any],
    base: int,
    skip: set[int],
) -> Iterator[Any]:
    """The mapper's results for records ``base`` on, None for those in ``skip`` (not mapped)."""
    numbered = zip(itertools.count(base), keys, values)
    return (None if i in skip else mapper(k, v) for i, k, v in numbered)


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
    * the checked loop, which keeps every value and pins a bad pair on its record.

    Each of the mapper's results is read exactly once: where one path stops,
    the next goes on from the result (or pair) it stopped at. So the mapper is
    called once per record, and its side effects and counters happen once.
    """

    def __init__(self, buf: dict[Any, list[Any]], combiner: Callable[..., Any] | None) -> None:
        self.buf = buf
        self.combiner = combiner
        self.single: dict[Any, int] = {}  # key -> its slot in single_counts
        self.single_counts = bytearray()  # per slot: times (key, single_value) was emitted
        self.single_value: Any = _UNSET
        self.use_single = speedups is not None
        self.pending: dict[tuple[Any, Any], int] = {}  # (key, value) -> times emitted
        self.pending_kinds: set[type] = set()  # the types of the values in pending
        self.countable = True  # False once a chunk's pairs could not all be counted
        self.held = 0  # values buffered (counted ones included)
        self.emitted = 0  # pairs the mapper emitted

    def keys_held(self) -> int:
        """An upper bound on the distinct keys held: the buffer plus both counts."""
        return len(self.buf) + len(self.single) + len(self.pending)

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
        try:
            _count_elements(self.pending, pairs)
        except Exception:
            self.countable = False  # an unhashable key, or a key's own error
            taken = len(chunk) - operator.length_hint(pairs) - 1
        else:
            taken = len(chunk)
        self.held += taken
        self.emitted += taken
        return taken

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


class Executor:
    def __init__(
        self,
        conn: Connection,
        data_dir: str,
        shuffle_address: str,
        settings: WorkerSettings,
        keys: Keys | None = None,
    ) -> None:
        self.conn = conn
        self.keys = keys
        self.data_dir = data_dir
        self.shuffle_address = shuffle_address
        self.settings = settings
        self.jobs: dict[str, dict[str, Any]] = {}
        self._zctx: Any = None
        self.reader = shuffle.OutputReader()
        self.sockets = shuffle.SocketPool()  # connections to other workers' shuffle servers
        self._attempt = 0
        self._next_progress = 0.0

    # -- loop ---------------------------------------------------------------

    def serve(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                return
            if isinstance(msg, protocol.RunAttempt):
                self.run(msg)
            elif isinstance(msg, protocol.DropJob):
                self.jobs.pop(msg.job, None)
                self.reader.forget(shuffle.job_dir(self.data_dir, msg.job) + os.sep)

    def progress(self, fraction: float) -> None:
        now = time.monotonic()
        if now >= self._next_progress:
            self._next_progress = now + PROGRESS_EVERY
            self.conn.send(protocol.AttemptProgress(self._attempt, min(1.0, max(0.0, fraction))))

    def run(self, msg: protocol.RunAttempt) -> None:
        attempt, job_id, task, spec = msg.attempt, msg.job, msg.task, msg.spec
        self._attempt = attempt
        self._next_progress = time.monotonic() + PROGRESS_EVERY
        counters: dict[str, int] = {}
        previous = userfn.counting(counters)
        record = None
        try:
            if msg.code is not None:
                self.jobs[job_id] = cloudpickle.loads(msg.code)
            fns = self.jobs[job_id]
            os.makedirs(shuffle.job_dir(self.data_dir, job_id), exist_ok=True)
            if msg.kind == "map":
                report = self.run_map(fns, job_id, task, attempt, spec, msg.records, counters)
                result = None
            else:
                report, result = self.run_reduce(fns, job_id, task, attempt, spec, counters)
            report.counters = counters
        except RecordFailed as exc:
            cause = exc.__cause__ or exc
            record = exc.index
            self._fail(attempt, cause, record)
            return
        except Exception as exc:
            self._fail(attempt, exc, record)
            return
        finally:
            userfn.counting(previous)
        self.conn.send(protocol.Done(attempt, report, blobs=[] if result is None else [result]))

    def _fail(self, attempt: int, exc: BaseException, record: int | None) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        error = protocol.ErrorInfo.make(type(exc).__name__, str(exc), tb)
        self.conn.send(protocol.Failed(attempt, "user", error, record))

    # -- map ------------------------------------------------------------------

    def run_map(
        self,
        fns: dict[str, Any],
        job_id: str,
        task: int,
        attempt: int,
        spec: protocol.TaskSpec,
        records_blob: bytes | None,
        counters: dict[str, int],
    ) -> protocol.Report:
        assert spec.split is not None
        reader = read_split(spec.split.to_json(), records_blob)
        R = spec.num_reducers
        part = userfn.checked_partitioner(fns["partitioner"], R)
        stem = os.path.join(shuffle.job_dir(self.data_dir, job_id), f"m{task:05d}-a{attempt}")
        spill_dir = stem + ".spills"
        spills: list[tuple[str, list[shuffle.Segment]]] = []
        combiner = fns["combiner"]
        path = shuffle.map_output_path(self.data_dir, job_id, task, attempt)
        # The record loop makes millions of short-lived tuples and no cycles worth
        # chasing: the cyclic collector would only slow it down.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            buf, n_in, n_out = self._map_records(
                fns["mapper"],
                combiner,
                reader,
                set(spec.skip),
                counters,
                lambda b: spills.append(self._spill(b, part, R, spill_dir, len(spills))),
            )
            counters["zmqmr.map_input_records"] = n_in
            counters["zmqmr.map_output_records"] = n_out
            writer = shuffle.MapOutputWriter(path, R)
            try:
                if not spills:
                    if combiner is not None:
                        self._combine(buf, combiner)
                    for groups in self._partitioned(buf, part, R):
                        writer.write_segment(groups)
                else:
                    if buf:
                        spills.append(self._spill(buf, part, R, spill_dir, len(spills)))
                        buf.clear()
                    for r in range(R):
                        streams = [
                            shuffle.file_segment_groups(p, segs[r].offset, segs[r].length)
                            for p, segs in spills
                        ]
                        writer.write_segment(self._merge_runs(streams, combiner))
                segments = writer.close()
            except BaseException:
                writer.abort()
                raise
        finally:
            shutil.rmtree(spill_dir, ignore_errors=True)
            if gc_was_enabled:
                gc.enable()
        return protocol.Report(
            segments=[
                protocol.Segment(r, s.length, s.groups) for r, s in enumerate(segments) if s.length
            ],
            bytes=writer.bytes_written,
        )

    def _map_records(
        self,
        mapper: Callable[[Any, Any], Any],
        combiner: Callable[..., Any] | None,
        reader: SplitReader,
        skip: set[int],
        counters: dict[str, int],
        spill: Callable[[dict[Any, list[Any]]], None],
    ) -> tuple[dict[Any, list[Any]], int, int]:
        """Call the mapper on every record and group its pairs by key: a dict of lists.

        Records go in batches, through ``_Grouper``: while the pairs are of one
        immutable value (word count's ``(word, 1)``) their keys are counted in
        C, and the combiner later sees each key's values as ``repeat(value,
        n)``, the same multiset. The mapper is called once per record whatever
        path its pairs take, and an error is pinned on the record it came from.

        With a combiner a key's list is combined whenever it reaches COMBINE_AT
        values and the buffer spills past ``spill_records`` keys; without one it
        spills past ``spill_records`` values. Returns the buffer, the records
        read and the pairs emitted.
        """
        g = _Grouper(buf={}, combiner=combiner)
        spill_at = self.settings.spill_records
        index = read = skipped = 0
        for keys, values in reader.batches():
            base, index = index, index + len(keys)
            keys_read = iter(keys)
            where = functools.partial(_last_read, keys_read, index - 1)
            results: Iterator[Any] = map(mapper, keys_read, values)
            dropped = sum(base <= r < index for r in skip) if skip else 0
            if dropped:
                skipped += dropped
                results = _skipping(mapper, keys_read, values, base, skip)
            try:
                g.add(results, base, where)
            except RecordFailed:
                raise
            except Exception as exc:
                raise RecordFailed(where()) from exc
            read += len(keys)
            self.progress(reader.fraction())
            if (g.keys_held() if combiner is not None else g.held) >= spill_at:
                g.flush()
                spill(g.buf)
                g.buf.clear()
                g.held = 0
        g.flush()
        if skipped:
            counters["zmqmr.skipped_records"] = skipped
        return g.buf, read - skipped, g.emitted

    @staticmethod
    def _combine(buf: dict[Any, list[Any]], combiner: Callable[..., Any]) -> None:
        for k, lst in buf.items():
            if len(lst) > 1:
                buf[k] = [userfn.combined(combiner, k, iter(lst))]

    @staticmethod
    def _partitioned(
        buf: dict[Any, list[Any]], part: userfn.Partitioning, R: int
    ) -> list[list[tuple[Any, list[Any]]]]:
        parts = part.split(buf.items())
        for p in parts:
            userfn.sort_by_key(p)
        return parts

    def _spill(
        self, buf: dict[Any, list[Any]], part: userfn.Partitioning, R: int, spill_dir: str, n: int
    ) -> tuple[str, list[shuffle.Segment]]:
        os.makedirs(spill_dir, exist_ok=True)
        path = os.path.join(spill_dir, f"run{n}")
        writer = shuffle.MapOutputWriter(path, R)
        for groups in self._partitioned(buf, part, R):
            writer.write_segment(groups)
        return path, writer.close()

    @staticmethod
    def _merge_runs(
        streams: list[Iterator[tuple[Any, list[Any]]]], combiner: Callable[..., Any] | None
    ) -> Iterator[tuple[Any, list[Any]]]:
        merged = userfn.merged(streams)
        sentinel = object()
        cur_key: Any = sentinel
        cur: list[Any] = []
        for k, vs in merged:
            if cur_key is not sentinel and k == cur_key:
                cur.extend(vs)
                continue
            if cur_key is not sentinel:
                yield (
                    cur_key,
                    (
                        [userfn.combined(combiner, cur_key, iter(cur))]
                        if combiner and len(cur) > 1
                        else cur
                    ),
                )
            cur_key, cur = k, list(vs)
        if cur_key is not sentinel:
            if combiner and len(cur) > 1:
                cur = [userfn.combined(combiner, cur_key, iter(cur))]
            yield cur_key, cur

    # -- reduce -----------------------------------------------------------------

    @property
    def zctx(self) -> Any:
        if self._zctx is None:
            import zmq

            self._zctx = zmq.Context()
        return self._zctx

    def _fetch_from(
        self, job_id: str, partition: int, address: str, wanted: list[shuffle.Wanted]
    ) -> tuple[dict[int, shuffle.Fetched], dict[int, ShuffleError]]:
        """Segments of map outputs on one worker: read locally, or over one connection."""
        if address != self.shuffle_address:
            s = self.settings
            return shuffle.fetch_segments(
                self.zctx,
                address,
                job_id,
                partition,
                wanted,
                chunk=s.fetch_chunk,
                timeout=s.fetch_timeout,
                retries=s.fetch_retries,
                keys=self.keys,
                pool=self.sockets,
            )
        fetched: dict[int, shuffle.Fetched] = {}
        failed: dict[int, ShuffleError] = {}
        for w in wanted:
            path = shuffle.map_output_path(self.data_dir, job_id, w.map_task, w.attempt)
            try:
                fetched[w.map_task] = shuffle.local_segment(path, partition, self.reader)
            except ShuffleError as exc:
                failed[w.map_task] = exc
            except OSError as exc:
                failed[w.map_task] = ShuffleError(str(exc))
        return fetched, failed

    def fetch_all(
        self, job_id: str, attempt: int, spec: protocol.TaskSpec, work_dir: str
    ) -> list[shuffle.Fetched]:
        """This partition's segment of every map output that has one, waiting out lost ones.

        Segments are fetched per worker (several workers at a time), several
        segments per request; those past ``reduce_memory`` go to files.
        """
        assert spec.partition is not None
        partition = spec.partition
        locations = {loc.map_task: loc for loc in spec.locations}
        fetched: dict[int, shuffle.Fetched] = {}
        waiting: dict[int, int] = {}  # map task -> the attempt whose output was lost
        mem = 0
        total = max(1, len(locations))
        with concurrent.futures.ThreadPoolExecutor(FETCH_PARALLEL) as pool:
            while len(fetched) < len(locations):
                by_address: dict[str, list[shuffle.Wanted]] = {}
                for m, loc in locations.items():
                    if m in fetched or m in waiting:
                        continue
                    if loc.size == 0:  # a re-executed map with nothing for this partition
                        fetched[m] = shuffle.Fetched(0, data=b"")
                        continue
                    spill = None
                    if mem + loc.size > self.settings.reduce_memory:
                        spill = os.path.join(work_dir, f"m{m}-a{loc.attempt}")
                    else:
                        mem += loc.size
                    want = shuffle.Wanted(m, loc.attempt, spill)
                    by_address.setdefault(loc.address, []).append(want)
                futures = [
                    pool.submit(self._fetch_from, job_id, partition, address, wanted)
                    for address, wanted in by_address.items()
                ]
                for fut in concurrent.futures.as_completed(futures):
                    got, failed = fut.result()
                    fetched.update(got)
                    for m, reason in failed.items():
                        waiting[m] = locations[m].attempt
                        why = str(reason)[: protocol.MAX_TEXT]
                        self.conn.send(protocol.FetchFailed(attempt, m, waiting[m], why))
                    self.progress(0.5 * len(fetched) / total)
                while waiting:
                    msg = self.conn.recv()
                    if not isinstance(msg, protocol.Relocate):
                        continue
                    loc = msg.location
                    locations[loc.map_task] = loc
                    if loc.map_task in waiting and loc.attempt != waiting[loc.map_task]:
                        del waiting[loc.map_task]
        return [fetched[m] for m in sorted(locations)]

    def run_reduce(
        self,
        fns: dict[str, Any],
        job_id: str,
        task: int,
        attempt: int,
        spec: protocol.TaskSpec,
        counters: dict[str, int],
    ) -> tuple[protocol.Report, bytes | None]:
        work_dir = os.path.join(shuffle.job_dir(self.data_dir, job_id), f"r{task:05d}-a{attempt}")
        os.makedirs(work_dir, exist_ok=True)
        try:
            return self._reduce(fns, job_id, task, attempt, spec, counters, work_dir)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)

    def _reduce(
        self,
        fns: dict[str, Any],
        job_id: str,
        task: int,
        attempt: int,
        spec: protocol.TaskSpec,
        counters: dict[str, int],
        work_dir: str,
    ) -> tuple[protocol.Report, bytes | None]:
        segments = self.fetch_all(job_id, attempt, spec, work_dir)
        total_groups = max(1, sum(loc.groups for loc in spec.locations))
        streams = [seg.groups() for seg in segments]
        in_memory = all(seg.data is not None for seg in segments)
        if in_memory and sum(seg.length for seg in segments) <= HASH_GROUP_BYTES:
            groups = userfn.hash_merged(streams)
        else:
            groups = userfn.merged(streams)
        output_dir = spec.output_dir
        limit = spec.result_limit
        out = None
        tmp = final = ""
        if output_dir:
            tmp = os.path.join(output_dir, temp_part_name(task, attempt))
            final = os.path.join(output_dir, part_name(task))
            out = open(tmp, "w", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        blocks: list[bytes] = []
        block: list[tuple[Any, Any]] = []
        size = 0
        too_big = False
        n = 0
        try:
            for k, v in userfn.reduce_groups(fns["reducer"], groups, counters):
                n += 1
                if out is not None:
                    out.write(f"{k}\t{v}\n")
                if not too_big:
                    block.append((k, v))
                    if len(block) >= shuffle.BLOCK_GROUPS:
                        blocks.append(shuffle.encode_block(block))
                        size += len(blocks[-1])
                        block = []
                        too_big = size > limit
                if n % 1024 == 0:
                    self.progress(
                        0.5
                        + 0.5
                        * min(1.0, counters.get("zmqmr.reduce_input_groups", 0) / total_groups)
                    )
            if block and not too_big:
                blocks.append(shuffle.encode_block(block))
                size += len(blocks[-1])
                too_big = size > limit
            if out is not None:
                out.flush()
                os.fsync(out.fileno())
                out.close()
                out = None
                os.replace(tmp, final)
        finally:
            if out is not None:
                out.close()
                remove_paths([tmp])
        counters["zmqmr.reduce_output_records"] = n
        report = protocol.Report(too_big=too_big, output_file=final or None)
        return report, (None if too_big else b"".join(blocks))


def main(
    conn: Connection,
    parent_pid: int,
    data_dir: str,
    shuffle_address: str,
    settings: WorkerSettings,
    keys_dir: str | None = None,
) -> None:
    """Entry point of an executor process (started with the spawn method)."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    keys = load_keys(keys_dir, MEMBER) if keys_dir else None
    Executor(conn, data_dir, shuffle_address, settings, keys).serve()
    os._exit(0)
