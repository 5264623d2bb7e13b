"""The reduce side of an attempt: from map outputs on many workers to one part file.

    locations (from the master) --fetch_all--> this partition's segment of every
        map output: read locally, or fetched per worker over one connection,
        several segments per request, to memory or (past reduce_memory) to files
    --merge--> groups sorted by key (a dict for small in-memory inputs; else at
        most merge_fanin streams at once, in passes through disk beyond that),
        one key's values streamed to the reducer a block at a time
    --reducer--> (key, value) records: result blocks for the client, and/or
        the attempt's part file under output_dir/_temporary (the master's job
        commit moves the approved attempt's file into place: zmqmr.commit)

A map output that cannot be fetched is reported to the worker (FetchFailed);
the attempt waits for the master's Relocate with the re-executed map's new
location and goes on.
"""

from __future__ import annotations

import concurrent.futures
import gc
import os
import shutil
from collections.abc import Callable, Iterator
from itertools import compress
from multiprocessing.connection import Connection
from typing import Any

from . import layout, mapoutput, merge, outputreader, protocol, shuffle, userfn
from .config import WorkerSettings
from .errors import ShuffleError
from .security import Keys

FETCH_PARALLEL = 4
#: A reduce whose fetched segments are all in memory and hold at most this many
#: bytes groups them in a dict (decoded, they take a few times this much).
HASH_GROUP_BYTES = 16 * 1024 * 1024
#: A part file is written in large writes: a batch's lines joined (a few
#: thousand at most), through a buffer of this many bytes.
WRITE_BUFFER = 1024 * 1024
#: Bytes of a part file read back at a time for result blocks (``ResultBlocks``).
READ_BACK = 4 * 1024 * 1024


class WorkDir:
    """A reduce attempt's directory for segments fetched past reduce_memory and for
    merge passes, made on first use: a reduce that spills nothing makes none."""

    __slots__ = ("path", "made")

    def __init__(self, path: str) -> None:
        self.path = path
        self.made = False

    def get(self) -> str:
        if not self.made:
            os.makedirs(self.path, exist_ok=True)
            self.made = True
        return self.path

    def remove(self) -> None:
        if self.made:
            shutil.rmtree(self.path, ignore_errors=True)
            self.made = False


class ResultBlocks:
    """The result blocks of a reduce: its records, BLOCK_GROUPS to a block, as long as
    they fit in ``limit`` bytes; none once they do not (``too_big``).

    With a part file (``out``, written at ``path``), records are not encoded as they
    come while the file's lines are exactly them (keys and values of type str,
    ASCII, no tab or newline inside: ``_lines_exact``): their lines are only
    counted, and read back from the file at the end if they may fit. A record
    encodes to more bytes than its line (each string's bytes plus opcodes and
    lengths, and no memo on this path), so once the lines pass ``limit`` the
    blocks cannot fit, and a sort's results, which never fit, cost nothing to
    encode. A batch that is not its lines (an int value, a tab in a value) makes
    the file so far be read back and encoded, and what follows be encoded as it
    comes, as without a part file. The blocks are the same either way.

    ``exact`` says, at the end, whether the part file's lines are its records
    exactly (every key and value a str with no tab or line break inside), past
    ``limit`` too: then the file, read line by line, is the results
    (``JobResult.items``), and nothing else need be.

    ``add`` takes each batch before its lines are written to ``out``.
    """

    def __init__(self, limit: int, out: Any = None, path: str = "") -> None:
        self.limit = limit
        self.out = out
        self.path = path
        self.lazy = out is not None  # the file's lines are the records so far, in ASCII
        self.exact = out is not None  # the file's lines are the records so far
        self.chars = 0  # of those lines
        self.records: list[tuple[Any, Any]] = []  # the next block's
        self.blocks: list[bytes] = []
        self.size = 0
        self.too_big = False

    def add(
        self, keys: list[Any], values: list[Any], lines: str | None = None, all_str: bool = False
    ) -> None:
        """One batch; ``lines``: its part-file lines, ``all_str``: ``_all_str`` of it."""
        if self.exact:
            self.exact = lines is not None and all_str and _lines_exact(lines, len(keys))
        if self.too_big:
            return
        if self.lazy:
            if self.exact and lines is not None and lines.isascii():
                self.chars += len(lines)
                self.too_big = self.chars > self.limit
                return
            self.lazy = False
            for records in self._read_back():
                self._encode(records)
        self._encode(zip(keys, values))

    def _encode(self, records: Any) -> None:
        results = self.records
        results += records
        while len(results) >= mapoutput.BLOCK_GROUPS and not self.too_big:
            self.blocks.append(mapoutput.encode_block(results[: mapoutput.BLOCK_GROUPS]))
            del results[: mapoutput.BLOCK_GROUPS]
            self.size += len(self.blocks[-1])
            self.too_big = self.size > self.limit
        if self.too_big:
            results.clear()
            self.blocks.clear()

    def _read_back(self) -> Iterator[list[tuple[str, str]]]:
        """The records of the part file's lines so far, a few MiB of lines at a time."""
        if not self.chars:
            return
        self.out.flush()
        with open(self.path, "rb") as f:
            rest = b""
            while chunk := f.read(READ_BACK):
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                fields = data[:cut].decode("ascii").replace("\n", "\t").split("\t")
                fields.pop()  # after the last newline
                yield list(zip(fields[0::2], fields[1::2]))

    def finish(self) -> bytes | None:
        """The blocks, or None if they do not fit; before ``out`` is closed."""
        if self.lazy and not self.too_big:
            self.lazy = False
            for records in self._read_back():
                self._encode(records)
        if self.records and not self.too_big:
            self.blocks.append(mapoutput.encode_block(self.records))
            self.records = []
            self.size += len(self.blocks[-1])
            self.too_big = self.size > self.limit
        if self.too_big:
            self.blocks.clear()
            return None
        return b"".join(self.blocks)


def _lines_exact(lines: str, n: int) -> bool:
    """Whether ``lines`` (``key<TAB>value<NL>`` per record) of ``n`` records whose keys
    and values are all str give back the records exactly: no tab or ``\n`` is
    theirs (``JobResult.items`` splits lines at ``\n`` only)."""
    return lines.count("\n") == n and lines.count("\t") == n


_STR = {str}
_BYTES = {bytes}


def _all_str(keys: list[Any], values: list[Any]) -> bool:
    """Whether every key and value of a batch is a str (no subclass)."""
    return set(map(type, keys)) == _STR and set(map(type, values)) == _STR


def _lines(keys: list[Any], values: list[Any], all_str: bool) -> str:
    """A batch's part-file lines, ``key<TAB>value<NL>`` each as an f-string formats
    them. Where every key and value is a str (whose format is itself), one join of
    the fields and their separators laid out in a list: about 40 % of the cost of
    formatting each line. ``all_str``: ``_all_str`` of the batch."""
    if all_str:
        fields = ["", "\t", "", "\n"] * len(keys)
        fields[0::4] = keys
        fields[2::4] = values
        return "".join(fields)
    return "".join([f"{k}\t{v}\n" for k, v in zip(keys, values)])


class ReduceSide:
    """What an executor keeps between reduce attempts: connections and open files."""

    def __init__(
        self,
        conn: Connection,
        data_dir: str,
        shuffle_address: str,
        settings: WorkerSettings,
        keys: Keys | None,
        reader: outputreader.OutputReader,
        progress: Callable[[float], None],
    ) -> None:
        self.conn = conn
        self.data_dir = data_dir
        self.shuffle_address = shuffle_address
        self.settings = settings
        self.keys = keys
        self.reader = reader
        self.progress = progress
        self.sockets = shuffle.SocketPool()  # connections to other workers' shuffle servers
        self._zctx: Any = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def zctx(self) -> Any:
        if self._zctx is None:
            import zmq

            self._zctx = zmq.Context()
        return self._zctx

    # -- fetch ------------------------------------------------------------------

    def _fetch_from(
        self, job_id: str, partition: int, address: str, wanted: list[shuffle.Wanted]
    ) -> tuple[shuffle.Got, dict[int, ShuffleError]]:
        """Segments of map outputs on one worker: read locally, or over one connection."""
        if address != self.shuffle_address:
            return self._start(job_id, partition, address, wanted).result()
        # Past reduce_memory (a spill path), a local segment is read where it lies, as merged.
        directory = layout.job_dir(self.data_dir, job_id)
        return shuffle.local_segments(self.reader, directory, partition, wanted, lean=True)

    def _start(
        self, job_id: str, partition: int, address: str, wanted: list[shuffle.Wanted]
    ) -> shuffle.Fetching:
        """The fetch from another worker, its first request sent (``shuffle.start_fetch``)."""
        s = self.settings
        return shuffle.start_fetch(
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
            lean=True,
        )

    def _fetch_each(
        self,
        job_id: str,
        partition: int,
        by_address: dict[str, list[shuffle.Wanted]],
        small: bool = False,
    ) -> Iterator[tuple[shuffle.Got, dict[int, ShuffleError]]]:
        """What ``_fetch_from`` gives for each address, several addresses at a time.

        ``small``: every segment wanted, in memory, fits in one request to its
        worker. Then each other worker is asked at once, this worker's own are
        read meanwhile, and the answers are taken in turn, all in this thread.
        Else other workers' segments are fetched by the pool's threads (kept
        between attempts, since starting them is much of what a small reduce
        costs) while this thread reads this worker's own; one address alone (a
        reduce whose maps ran on one worker, or a retry) is fetched in this thread.
        """
        local = by_address.get(self.shuffle_address)
        remote = [(a, w) for a, w in by_address.items() if a != self.shuffle_address]
        if small and remote:
            flights: list[shuffle.Fetching] = []
            try:
                for address, wanted in remote:
                    flights.append(self._start(job_id, partition, address, wanted))
                if local is not None:
                    yield self._fetch_from(job_id, partition, self.shuffle_address, local)
                for flight in flights:
                    yield flight.result()
            finally:
                for flight in flights:
                    flight.close()
            return
        futures = []
        if remote and (local is not None or len(remote) > 1):
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(FETCH_PARALLEL)
            futures = [
                self._pool.submit(self._fetch_from, job_id, partition, address, wanted)
                for address, wanted in remote
            ]
        elif remote:
            local = None
            ((address, wanted),) = remote
            yield self._fetch_from(job_id, partition, address, wanted)
        if local is not None:
            yield self._fetch_from(job_id, partition, self.shuffle_address, local)
        for fut in concurrent.futures.as_completed(futures):
            yield fut.result()

    def fetch_all(
        self, job_id: str, attempt: int, spec: protocol.TaskSpec, work_dir: WorkDir
    ) -> list[shuffle.Fetched | bytes]:
        """This partition's segment of every map output that has one, waiting out lost ones
        (one in memory and verified as its bytes: ``shuffle.Got``).

        Segments are fetched per worker (several workers at a time), several
        segments per request; those past ``reduce_memory`` go to files.
        """
        assert spec.partition is not None
        partition = spec.partition
        located = spec.locations
        # by position, as the spec gives them; a Relocate changes or adds one (``where``)
        maps = list(located.maps)
        attempts = list(located.attempts)
        addresses = [located.addresses[w] for w in located.servers]
        sizes = list(located.sizes)
        where: dict[int, int] | None = None  # map task -> its position, made on a Relocate
        fetched: shuffle.Got = {}
        waiting: dict[int, int] = {}  # map task -> the attempt whose output was lost
        mem = 0
        total = max(1, len(maps))
        here = self.shuffle_address
        # A partition too large to group in a dict is merged from streams: this
        # worker's own segments are then read where they lie, a block at a time,
        # and hold no memory (the page cache has them), leaving reduce_memory to
        # the fetched ones.
        total_bytes = sum(sizes)
        merged = total_bytes > min(HASH_GROUP_BYTES, self.settings.reduce_memory)
        memory = self.settings.reduce_memory
        # All in memory and no more than one request's worth: fetched with no thread
        small = not merged and total_bytes <= self.settings.fetch_chunk
        while len(fetched) < len(maps):
            by_address: dict[str, list[shuffle.Wanted]] = {}
            # the first round, every segment to memory (most often): a lean loop
            lean = not fetched and not merged and total_bytes <= memory and 0 not in sizes
            if lean:
                mem = total_bytes
                every = list(map(shuffle.Wanted, maps, attempts))
                servers = list(dict.fromkeys(addresses))
                if len(servers) == 1:
                    by_address[servers[0]] = every
                elif len(servers) <= 16:  # a C-level pass over the column per worker
                    for address in servers:
                        by_address[address] = list(compress(every, map(address.__eq__, addresses)))
                else:
                    for want, address in zip(every, addresses):
                        by_address.setdefault(address, []).append(want)
            for m, att, address, size in () if lean else zip(maps, attempts, addresses, sizes):
                if m in fetched or m in waiting:
                    continue
                if size == 0:  # a re-executed map with nothing for this partition
                    fetched[m] = b""
                    continue
                spill = None
                if merged and address == here:
                    spill = os.path.join(work_dir.path, f"m{m}-a{att}")  # in place
                elif mem + size > memory:
                    spill = os.path.join(work_dir.get(), f"m{m}-a{att}")
                else:
                    mem += size
                want = shuffle.Wanted(m, att, spill)
                wanted = by_address.get(address)
                if wanted is None:
                    by_address[address] = [want]
                else:
                    wanted.append(want)
            few = small and all(len(w) <= protocol.MAX_FETCH_PARTS for w in by_address.values())
            for got, failed in self._fetch_each(job_id, partition, by_address, few):
                fetched.update(got)
                if failed and where is None:
                    where = {m: i for i, m in enumerate(maps)}
                for m, reason in failed.items():
                    assert where is not None
                    waiting[m] = attempts[where[m]]
                    why = str(reason)[: protocol.MAX_TEXT]
                    self.conn.send(protocol.FetchFailed(attempt, m, waiting[m], why))
                self.progress(0.5 * len(fetched) / total)
            while waiting:
                msg = self.conn.recv()
                if not isinstance(msg, protocol.Relocate):
                    continue
                loc = msg.location
                assert where is not None  # made when the first segment failed
                i = where.get(loc.map_task, -1)
                if i < 0:  # a map output the spec did not name (with data now, or empty)
                    where[loc.map_task] = len(maps)
                    maps.append(loc.map_task)
                    attempts.append(loc.attempt)
                    addresses.append(loc.address)
                    sizes.append(loc.size)
                else:
                    attempts[i], addresses[i], sizes[i] = loc.attempt, loc.address, loc.size
                if loc.map_task in waiting and loc.attempt != waiting[loc.map_task]:
                    del waiting[loc.map_task]
        return [fetched[m] for m in sorted(maps)]

    # -- merge ------------------------------------------------------------------

    def _grouped(
        self, segments: list[shuffle.Fetched | bytes], work_dir: WorkDir, counters: dict[str, int]
    ) -> Iterator[list[tuple[Any, list[Any]]]]:
        """The fetched segments' groups, sorted and merged (a key may span several
        groups), in lists of a few thousand groups at most.

        Small inputs held in memory are grouped in a dict; the rest are merged
        at most ``merge_fanin`` streams at a time, in passes through disk when
        there are more, and stream to the reducer a block at a time.
        """
        s = self.settings
        spilled = size = 0
        in_memory = True
        datas: list[bytes] = []  # in memory, not empty
        unchecked: list[bytes] = []
        rest: list[shuffle.Fetched | bytes] = segments
        if set(map(type, segments)) <= _BYTES:  # all in memory and verified (most often)
            datas = list(filter(None, segments))  # type: ignore[arg-type]
            size = sum(map(len, datas))
            rest = []
        for seg in rest:  # one pass: one segment per map output, many at large R
            if type(seg) is bytes:
                if seg:
                    datas.append(seg)
                    size += len(seg)
                continue
            assert isinstance(seg, shuffle.Fetched)
            size += seg.length
            if seg.data is None:
                in_memory = False
                if seg.path and not seg.in_place:
                    spilled += seg.length
            elif seg.data:
                datas.append(seg.data)
                if not seg.checked:
                    unchecked.append(seg.data)
        batches: Iterator[list[tuple[Any, list[Any]]]]
        if in_memory and size <= min(HASH_GROUP_BYTES, s.reduce_memory):
            for i in mapoutput.bad_segments(unchecked):
                mapoutput.verify_segment(unchecked[i])  # raises, saying what is wrong
            # decoded a part (or a segment) at a time into the dict, in order (a key's
            # values keep their order): every segment's groups decoded at once, beside
            # the dict, held them all
            groups: dict[Any, list[Any]] = {}
            mapoutput.merge_segments(datas, groups)
            items = userfn.sorted_groups(groups)
            del groups
            step = userfn.MERGE_BATCH
            batches = (items[i : i + step] for i in range(0, len(items), step))
        else:
            del datas, unchecked
            segments[:] = [
                shuffle.Fetched(len(seg), seg, checked=True) if type(seg) is bytes else seg
                for seg in segments
            ]
            fanin = merge.fanin_for(s.merge_fanin, s.reduce_memory)
            path = work_dir.get() if len(segments) > fanin else work_dir.path  # passes write
            sources, written = merge.merge_down(segments, fanin, path)
            spilled += written
            batches = userfn.merged_batches(merge.streams(sources))
        if spilled:
            counters[merge.SPILLED] = counters.get(merge.SPILLED, 0) + spilled
        return batches

    # -- reduce -----------------------------------------------------------------

    def run_reduce(
        self,
        fns: dict[str, Any],
        job_id: str,
        task: int,
        attempt: int,
        spec: protocol.TaskSpec,
        counters: dict[str, int],
    ) -> tuple[protocol.Report, bytes | None]:
        """Run one reduce attempt: its report, and its result blocks unless too big."""
        work_dir = WorkDir(layout.reduce_work_dir(self.data_dir, job_id, task, attempt))
        # Decoding and merging make millions of small objects and no cycles worth
        # chasing (as on the map side): the cyclic collector would only slow it down.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._reduce(fns, job_id, task, attempt, spec, counters, work_dir)
        finally:
            work_dir.remove()
            if gc_was_enabled:
                gc.enable()

    def _reduce(
        self,
        fns: dict[str, Any],
        job_id: str,
        task: int,
        attempt: int,
        spec: protocol.TaskSpec,
        counters: dict[str, int],
        work_dir: WorkDir,
    ) -> tuple[protocol.Report, bytes | None]:
        segments = self.fetch_all(job_id, attempt, spec, work_dir)
        total_groups = max(1, sum(spec.locations.groups))
        batches = self._grouped(segments, work_dir, counters)
        output_dir = spec.output_dir
        # Results come back only if every partition's fit in result_limit together.
        # With output_dir they are in the part files anyway, so a reduce encodes
        # no more than its share: past it, its blocks would be thrown away.
        limit = spec.result_limit // spec.num_reducers if output_dir else spec.result_limit
        out = None
        tmp = final = ""
        if output_dir:  # under _temporary/JOB, made at submit: the job's commit moves it
            tmp = layout.attempt_part_path(output_dir, job_id, task, attempt)
            final = os.path.join(output_dir, layout.part_name(task))
            out = open(  # noqa: SIM115
                tmp, "w", WRITE_BUFFER, encoding="utf-8", errors="surrogateescape"
            )
        results = ResultBlocks(limit, out, tmp)
        n = 0
        blob = None
        try:
            for keys, values in userfn.reduce_batches(fns["reducer"], batches, counters):
                n += len(keys)
                if out is not None:
                    all_str = _all_str(keys, values)
                    lines = _lines(keys, values, all_str)
                    results.add(keys, values, lines, all_str)
                    out.write(lines)
                    del lines
                else:
                    results.add(keys, values)
                self.progress(
                    0.5
                    + 0.5 * min(1.0, counters.get("zmqmr.reduce_input_groups", 0) / total_groups)
                )
            blob = results.finish()
            if out is not None:
                out.flush()
                os.fsync(out.fileno())
                out.close()
                out = None
        finally:
            if out is not None:
                out.close()
                layout.remove_paths([tmp])
        counters["zmqmr.reduce_output_records"] = n
        report = protocol.Report(
            too_big=blob is None,
            output_file=final or None,
            text_exact=blob is None and results.exact,
        )
        return report, blob
