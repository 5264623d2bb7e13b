"""Map outputs: the file format, the server that serves them, and the fetch.

File format (one file per map attempt)::

    segment 0 | segment 1 | ... | segment R-1 | index | footer

A segment is a run of blocks holding the sorted ``(key, values)`` groups of
one partition. A block is ``<codec:u8><length:u32><crc32:u32>`` then
``length`` bytes of payload: a list of groups, pickled without a memo (fast,
and exact about types, which marshal is not: it turns a bytearray or an
array into bytes), or with one for cyclic values, or with cloudpickle for
what plain pickle cannot name (closures, classes shipped by value, which keep
their slots and aliases: see ``pickling``); the checksum covers the codec and
length too. The index holds R entries ``<offset:u64><length:u64><groups:u64>``;
the footer is ``<index offset:u64><index crc32:u32>`` and a magic. A flipped
byte or a truncated file fails a checksum or a length and raises
``CorruptOutput``: corrupt data is never decoded, let alone reduced.

The server is a REP socket in its own thread; a request names a map output by
``(job, map task, attempt, partition, offset)`` and the server builds the path
itself, never taking one from the wire.
"""

from __future__ import annotations

import io
import itertools
import logging
import operator
import os
import pickle
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from . import pickling, protocol
from .errors import CorruptOutput, ProtocolError, ShuffleError
from .layout import job_dir, map_output_name
from .security import Keys

log = logging.getLogger(__name__)

_second = operator.itemgetter(1)

Group = tuple[Any, list[Any]]

BLOCK_HEADER = struct.Struct("<BII")
INDEX_ENTRY = struct.Struct("<QQQ")
FOOTER = struct.Struct("<QI8s")
MAGIC = b"ZMQMRIX1"
CODEC_PICKLE = 1
CODECS = (CODEC_PICKLE,)
#: Groups per block of the results a reduce sends back to the client.
BLOCK_GROUPS = 2048
#: A map-output block is cut at about this many bytes: it is the unit of
#: checksum and of reading, so a reader holds one block's bytes per stream.
#: Its payload is a run of pickles ("parts") of at most PART_GROUPS groups,
#: PART_VALUES values (a group counts its key as one) and about PART_BYTES
#: bytes, decoded one at a time: so a reader holds one part decoded, not a
#: block, and (un)pickling runs on lists of a size it is fast on. A key with
#: more values than a part takes spans several parts, and blocks: it appears
#: in consecutive groups, each with a run of its values.
BLOCK_BYTES = 1 << 20
PART_BYTES = 256 << 10
PART_GROUPS = 1024
PART_VALUES = 16384

#: A fetch request is a few hundred bytes; anything much larger is refused by the socket.
MAX_REQUEST_BYTES = 64 * 1024


# -- blocks ------------------------------------------------------------------------


def _pickle_fast(obj: Any) -> bytes:
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo: several times faster on streams of small tuples
    pickler.dump(obj)
    return buf.getvalue()


def _checksum(codec: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(bytes((codec,)) + len(payload).to_bytes(4, "little")))


def _pickle_part(groups: list[Any]) -> bytes:
    try:
        return _pickle_fast(groups)
    except Exception:  # cyclic objects need the memo; closures need cloudpickle
        try:
            return pickle.dumps(groups, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            return pickling.dumps_values(groups)


def encode_block(groups: list[Any]) -> bytes:
    """One block of ``groups``, in parts of PART_GROUPS groups."""
    parts = [_pickle_part(groups[i : i + PART_GROUPS]) for i in range(0, len(groups), PART_GROUPS)]
    return b"".join(_block(parts or [_pickle_part([])]))


def _block(parts: list[bytes]) -> list[bytes]:
    """A block's header and payload parts, ready for ``writelines``."""
    size = sum(map(len, parts))
    crc = zlib.crc32(bytes((CODEC_PICKLE,)) + size.to_bytes(4, "little"))
    for part in parts:
        crc = zlib.crc32(part, crc)
    return [BLOCK_HEADER.pack(CODEC_PICKLE, size, crc), *parts]


def encode_groups(groups: Iterable[Group], target: int = BLOCK_BYTES) -> Iterator[list[bytes]]:
    """``groups`` (sorted) as blocks of about ``target`` bytes, each a list of byte
    strings (its header, then its parts) to write out; a key's values are cut into
    runs across parts, and blocks, where they do not fit in one.

    A part's size is known only once it is pickled, so the values a part
    takes are planned from the bytes per value of the part before (of a
    sample of the first group to begin with).
    """
    it = iter(groups)
    head = next(it, None)
    if head is None:
        return
    try:
        sample = len(_pickle_fast((head[0], list(head[1])[:16]))) / (min(len(head[1]), 16) + 1)
    except Exception:  # the part's own encoder will say what is wrong
        sample = 64.0
    budget = _budget(sample)
    it = itertools.chain((head,), it)
    parts: list[bytes] = []
    size = 0
    per_group = len(head[1]) + 1.0  # values per group (its key counted), as last seen
    while True:
        # As many groups as the budget takes at the last chunk's values per group:
        # a key's runs of many values are taken a few at a time, not PART_GROUPS.
        take = max(1, min(PART_GROUPS, int(budget / per_group)))
        chunk = list(itertools.islice(it, take))
        if not chunk:
            break
        try:
            units = sum(map(len, map(_second, chunk))) + len(chunk)
        except TypeError:  # values that are not a list: the careful path lists them
            units = budget + 1
        per_group = max(1.0, units / len(chunk))
        pieces = [(chunk, units)] if units <= budget else _cut(chunk, budget)
        for piece, used in pieces:
            data = _pickle_part(piece)
            parts.append(data)
            size += len(data)
            budget = _budget(len(data) / used)
            if size >= target:
                yield _block(parts)
                parts, size = [], 0
    if parts:
        yield _block(parts)


def _budget(per_value: float) -> int:
    """The values a part takes when each takes ``per_value`` bytes pickled."""
    return max(2, min(PART_VALUES, int(PART_BYTES / max(1.0, per_value))))


def _cut(chunk: list[Group], budget: int) -> Iterator[tuple[list[Group], int]]:
    """``chunk`` in pieces of at most ``budget`` values, and the values of each; a
    group's values are cut where they do not fit (a piece takes at least one)."""
    piece: list[Group] = []
    units = 0
    for key, values in chunk:
        if type(values) is not list:
            values = list(values)
        n = len(values)
        start = 0
        while True:
            take = n - start
            room = budget - units - 1
            if take > room:
                if room < 1 and piece:
                    yield piece, units
                    piece, units = [], 0
                    continue
                take = max(room, 1)
            piece.append((key, values if take == n else values[start : start + take]))
            units += take + 1
            start += take
            if units >= budget:
                yield piece, units
                piece, units = [], 0
            if start >= n:
                break
    if piece:
        yield piece, units


def decode_parts(codec: int, payload: bytes | memoryview) -> Iterator[list[Any]]:
    """The lists of groups a block's payload holds, decoded one at a time."""
    if codec != CODEC_PICKLE:
        raise CorruptOutput(f"unknown block codec {codec}")
    f = io.BytesIO(payload)
    del payload  # the copy in f is all that is held
    end = len(f.getbuffer())
    while f.tell() < end:
        yield pickle.Unpickler(f).load()


def decode_payload(codec: int, payload: bytes | memoryview) -> list[Any]:
    """Every group of a block's payload, in one list."""
    parts = decode_parts(codec, payload)
    groups: list[Any] = next(parts, [])
    for part in parts:
        groups.extend(part)
    return groups


def _read_block(f: Any, left: int, path: str) -> tuple[int, bytes]:
    """The next block of an open file, checked; ``left`` bytes remain in the segment."""
    head = f.read(BLOCK_HEADER.size)
    if len(head) < BLOCK_HEADER.size:
        raise CorruptOutput(f"{path}: truncated block header")
    codec, size, crc = BLOCK_HEADER.unpack(head)
    if codec not in CODECS or BLOCK_HEADER.size + size > left:
        raise CorruptOutput(f"{path}: bad block header")
    payload = f.read(size)
    if len(payload) < size or _checksum(codec, payload) != crc:
        raise CorruptOutput(f"{path}: block checksum mismatch or truncation")
    return codec, payload


def iter_blocks(data: bytes | memoryview, check: bool = True) -> Iterator[tuple[int, memoryview]]:
    """(codec, payload) of each block in ``data``, each checked; raises CorruptOutput.

    ``check=False`` skips the checksums (not the lengths): for bytes in memory
    that were verified already, which cannot have changed since."""
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        if end - pos < BLOCK_HEADER.size:
            raise CorruptOutput(f"truncated block header at byte {pos}")
        codec, length, crc = BLOCK_HEADER.unpack_from(view, pos)
        pos += BLOCK_HEADER.size
        if codec not in CODECS:
            raise CorruptOutput(f"unknown block codec {codec} at byte {pos}")
        if end - pos < length:
            raise CorruptOutput(f"truncated block: {length} bytes declared, {end - pos} left")
        payload = view[pos : pos + length]
        if check and _checksum(codec, payload) != crc:
            raise CorruptOutput(f"block checksum mismatch at byte {pos}")
        pos += length
        yield codec, payload


def verify_segment(data: bytes | memoryview) -> None:
    for _ in iter_blocks(data):
        pass


def segment_blocks(data: bytes | memoryview, check: bool = True) -> Iterator[list[Group]]:
    """The groups of a segment held in memory, a list at a time (a part of a block)."""
    for codec, payload in iter_blocks(data, check):
        yield from decode_parts(codec, payload)


def segment_groups(data: bytes | memoryview, check: bool = True) -> Iterator[Group]:
    """The groups of a segment held in memory."""
    for groups in segment_blocks(data, check):
        yield from groups


def file_segment_blocks(path: str, offset: int, length: int) -> Iterator[list[Group]]:
    """The groups of a segment held on disk, a list at a time (a part of a block); one
    block is read at a time."""
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left > 0:
            codec, payload = _read_block(f, left, path)
            left -= BLOCK_HEADER.size + len(payload)
            parts = decode_parts(codec, payload)
            del payload  # held by the parts' reader only
            yield from parts


def file_segment_groups(path: str, offset: int, length: int) -> Iterator[Group]:
    """The groups of a segment held on disk, read one block at a time."""
    for groups in file_segment_blocks(path, offset, length):
        yield from groups


def verify_file_segment(path: str, offset: int, length: int) -> None:
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left > 0:
            _, payload = _read_block(f, left, path)
            left -= BLOCK_HEADER.size + len(payload)


# -- map output files -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    offset: int
    length: int
    groups: int


class _Counted:
    """An iterable of groups that counts them as they pass."""

    __slots__ = ("groups", "n")

    def __init__(self, groups: Iterable[Group]) -> None:
        self.groups = groups
        self.n = 0

    def __iter__(self) -> Iterator[Group]:
        for group in self.groups:
            self.n += 1
            yield group


def write_run(path: str, groups: Iterable[Group]) -> int:
    """Write sorted ``groups`` as one segment's blocks in a file of its own; its length.

    The file is a reduce's merge run: read back with ``file_segment_blocks(path, 0, length)``.
    """
    with open(path, "wb") as f:
        for block in encode_groups(groups):
            f.writelines(block)
        return f.tell()


class MapOutputWriter:
    """Writes the R segments of one map output, in partition order, then its index.

    The file is written under a temporary name and renamed into place by
    ``close``, so a reader never sees half a file.
    """

    def __init__(self, path: str, num_partitions: int) -> None:
        self.path = path
        self.num_partitions = num_partitions
        self._tmp = f"{path}.tmp"
        self._f = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._segments: list[Segment] = []
        self.bytes_written = 0

    def write_segment(self, groups: Iterable[Group]) -> Segment:
        if len(self._segments) >= self.num_partitions:
            raise ValueError("more segments than partitions")
        start = self._f.tell()
        counted = _Counted(groups)
        for block in encode_groups(counted):
            self._f.writelines(block)
        seg = Segment(start, self._f.tell() - start, counted.n)
        self._segments.append(seg)
        return seg

    def close(self) -> list[Segment]:
        while len(self._segments) < self.num_partitions:
            self.write_segment(())
        index = b"".join(INDEX_ENTRY.pack(s.offset, s.length, s.groups) for s in self._segments)
        index_offset = self._f.tell()
        self._f.write(index)
        self._f.write(FOOTER.pack(index_offset, zlib.crc32(index), MAGIC))
        self.bytes_written = self._f.tell()
        self._f.close()
        os.replace(self._tmp, self.path)
        return self._segments

    def abort(self) -> None:
        self._f.close()
        try:
            os.remove(self._tmp)
        except FileNotFoundError:
            pass


def _read_raw_index(f: Any, path: str) -> tuple[bytes, int]:
    """The checked index bytes of an open map output file, and where the index starts."""
    size = f.seek(0, os.SEEK_END)
    if size < FOOTER.size:
        raise CorruptOutput(f"{path}: too short for a footer")
    f.seek(size - FOOTER.size)
    index_offset, crc, magic = FOOTER.unpack(f.read(FOOTER.size))
    if magic != MAGIC or index_offset > size - FOOTER.size:
        raise CorruptOutput(f"{path}: bad footer")
    f.seek(index_offset)
    index = f.read(size - FOOTER.size - index_offset)
    if zlib.crc32(index) != crc or len(index) % INDEX_ENTRY.size:
        raise CorruptOutput(f"{path}: index checksum mismatch")
    return index, index_offset


def _entry(index: bytes, index_offset: int, i: int, path: str) -> Segment:
    seg = Segment(*INDEX_ENTRY.unpack_from(index, i * INDEX_ENTRY.size))
    if seg.offset + seg.length > index_offset:
        raise CorruptOutput(f"{path}: segment past the index")
    return seg


def read_index(path: str) -> list[Segment]:
    """The segments of a map output file; raises CorruptOutput if the index is bad."""
    with open(path, "rb") as f:
        index, index_offset = _read_raw_index(f, path)
    n = len(index) // INDEX_ENTRY.size
    return [_entry(index, index_offset, i, path) for i in range(n)]


def _read_from(
    f: Any, index: bytes, index_offset: int, path: str, partition: int, offset: int, max_bytes: int
) -> tuple[int, bytes]:
    """(segment length, up to ``max_bytes`` from ``offset``) of one partition of an open
    map output whose checked index is given: only this partition's entry is unpacked."""
    if not 0 <= partition < len(index) // INDEX_ENTRY.size:
        raise ShuffleError(f"{path}: no partition {partition}")
    seg = _entry(index, index_offset, partition, path)
    if offset > seg.length:
        raise ShuffleError(f"offset {offset} past the segment's {seg.length} bytes")
    want = seg.length - offset if max_bytes < 0 else min(max_bytes, seg.length - offset)
    data = os.pread(f.fileno(), want, seg.offset + offset)
    if len(data) != want:
        raise CorruptOutput(f"{path}: truncated segment")
    return seg.length, data


class OutputReader:
    """Reads segments of map outputs, keeping the most recent files open with their
    checked index: a reducer reads one segment of every map output, so without
    this every read would open a file and check its index again (O(M·R) opens).

    A map output is immutable once in place; each read checks with ``stat`` that
    the file is still the one held open, so a removed or replaced output is
    never served from an old descriptor. Thread-safe.
    """

    def __init__(self, max_open: int = 512) -> None:
        self.max_open = max_open
        self._open: dict[str, tuple[Any, bytes, int, int]] = {}  # path -> f, index, offset, ino
        self._lock = threading.Lock()

    def _held(self, path: str) -> tuple[Any, bytes, int]:
        ino = os.stat(path).st_ino  # FileNotFoundError: missing
        held = self._open.pop(path, None)
        if held is not None and held[3] != ino:
            held[0].close()
            held = None
        if held is None:
            f = open(path, "rb")  # noqa: SIM115 - closed on eviction or forget()
            try:
                index, index_offset = _read_raw_index(f, path)
            except BaseException:
                f.close()
                raise
            held = (f, index, index_offset, os.fstat(f.fileno()).st_ino)
            while len(self._open) >= self.max_open:
                oldest = next(iter(self._open))
                self._open.pop(oldest)[0].close()
        self._open[path] = held  # most recent last
        return held[0], held[1], held[2]

    def read(
        self, path: str, partition: int, offset: int = 0, max_bytes: int = -1
    ) -> tuple[int, bytes]:
        """(segment length, bytes from ``offset``) of one partition of a map output."""
        with self._lock:
            f, index, index_offset = self._held(path)
            return _read_from(f, index, index_offset, path, partition, offset, max_bytes)

    def read_many(
        self, partition: int, wanted: Iterable[tuple[str, int]], max_bytes: int = -1
    ) -> list[tuple[int, bytes] | Exception]:
        """What ``read`` gives for each ``(path, offset)`` of ``wanted`` (or the error it
        raises), ``max_bytes`` in all: the list stops once they are spent. The lock is
        taken once for the batch: a reducer reads one small segment of many outputs."""
        out: list[tuple[int, bytes] | Exception] = []
        budget = max_bytes
        with self._lock:
            for path, offset in wanted:
                if max_bytes >= 0 and budget <= 0:
                    break
                try:
                    f, index, index_offset = self._held(path)
                    got = _read_from(f, index, index_offset, path, partition, offset, budget)
                except (OSError, ValueError, ShuffleError) as exc:
                    out.append(exc)
                    continue
                budget -= len(got[1])
                out.append(got)
        return out

    def locate(self, path: str, partition: int) -> Segment:
        """Where one partition of a map output lies in its file."""
        with self._lock:
            _, index, index_offset = self._held(path)
            if not 0 <= partition < len(index) // INDEX_ENTRY.size:
                raise ShuffleError(f"{path}: no partition {partition}")
            return _entry(index, index_offset, partition, path)

    def forget(self, prefix: str = "") -> None:
        """Close the files under ``prefix`` (all of them by default)."""
        with self._lock:
            for path in [p for p in self._open if p.startswith(prefix)]:
                self._open.pop(path)[0].close()


def read_segment(
    path: str, partition: int, offset: int = 0, max_bytes: int = -1
) -> tuple[int, bytes]:
    """(segment length, bytes from ``offset``) of one partition of a local map output."""
    with open(path, "rb") as f:
        index, index_offset = _read_raw_index(f, path)
        return _read_from(f, index, index_offset, path, partition, offset, max_bytes)


# -- the server ------------------------------------------------------------------------


class ShuffleServer:
    """A REP socket in its own thread, serving map outputs under ``data_dir``."""

    def __init__(
        self, ctx: zmq.Context[Any], data_dir: str, bind: str, keys: Keys | None = None
    ) -> None:
        self.ctx = ctx
        self.keys = keys
        self.data_dir = data_dir
        self._bind = bind
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.address = ""
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="zmqmr-shuffle", daemon=True)
        self.requests = 0
        self.reader = OutputReader()

    def start(self) -> str:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self.address

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.reader.forget()

    def forget_job(self, job_id: str) -> None:
        """Close the job's files held open (its outputs are being removed)."""
        self.reader.forget(job_dir(self.data_dir, job_id) + os.sep)

    def _run(self) -> None:
        try:
            sock = self.ctx.socket(zmq.REP)
            sock.linger = 0
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
            if self.keys is not None:
                self.keys.server(sock)
            sock.bind(self._bind)
            self.address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        with sock:
            while not self._stop.is_set():
                if not sock.poll(200):
                    continue
                frames = sock.recv_multipart(copy=True)
                try:
                    reply = self.handle(frames)
                except Exception as exc:  # a REP socket must answer, and the thread live on
                    if isinstance(exc, ProtocolError):
                        log.warning("shuffle: dropping malformed request: %s", exc)
                    else:
                        log.exception("shuffle: a request failed")
                    reply = protocol.encode(protocol.FetchError("malformed request", False))
                sock.send_multipart(reply, copy=False)

    def handle(self, frames: list[bytes]) -> list[bytes]:
        """Serve the parts asked for, in order, up to ``max_bytes`` in all."""
        msg = protocol.decode(frames)
        if not isinstance(msg, protocol.Fetch):
            raise ProtocolError(f"shuffle server got {msg.TYPE}")
        self.requests += 1
        try:
            jdir = job_dir(self.data_dir, msg.job)
        except ValueError as exc:
            return protocol.encode(protocol.FetchError(str(exc), False))  # every part fails
        wanted = (
            (os.path.join(jdir, map_output_name(part.map_task, part.attempt)), part.offset)
            for part in msg.parts
        )
        parts: list[protocol.ChunkPart] = []
        blobs: list[bytes] = []
        read = self.reader.read_many(msg.partition, wanted, msg.max_bytes)
        for part, got in zip(msg.parts, read):
            if isinstance(got, Exception):
                corrupt = isinstance(got, CorruptOutput)
                return protocol.encode(protocol.FetchError(str(got), corrupt, part.map_task))
            total, data = got
            parts.append(protocol.ChunkPart(part.map_task, part.offset, total))
            blobs.append(data)
        return protocol.encode(protocol.Chunks(parts, blobs=blobs))


# -- the fetch ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetched segment: in memory (``data``) or in a local file (``path``, from
    ``offset``): a file of its own the reduce wrote, or (``in_place``) the map
    output itself on this worker's disk."""

    length: int
    data: bytes | None = None
    path: str | None = None
    offset: int = 0
    in_place: bool = False
    #: ``data`` was verified when it arrived: decoding skips the checksums.
    checked: bool = False

    def groups(self) -> Iterator[Group]:
        if self.data is not None:
            return segment_groups(self.data, not self.checked)
        assert self.path is not None
        return file_segment_groups(self.path, self.offset, self.length)

    def blocks(self) -> Iterator[list[Group]]:
        """The decoded groups, a part of a block at a time."""
        if self.data is not None:
            return segment_blocks(self.data, not self.checked)
        assert self.path is not None
        return file_segment_blocks(self.path, self.offset, self.length)


@dataclass(slots=True)
class Wanted:
    """One segment a reducer wants from a server: where its bytes go, how far it got."""

    map_task: int
    attempt: int
    spill_path: str | None = None
    offset: int = 0
    total: int = -1
    parts: list[bytes] | None = None
    out: Any = None

    def take(self, total: int, data: bytes) -> None:
        if self.total >= 0 and total != self.total:
            raise CorruptOutput(f"map task {self.map_task}: segment length changed")
        self.total = total
        if not data and self.offset < total:
            raise CorruptOutput(f"map task {self.map_task}: empty chunk before the segment's end")
        if self.spill_path is not None:
            if self.out is None:
                self.out = open(self.spill_path, "wb")  # noqa: SIM115 - closed in finish()
            self.out.write(data)
        else:
            if self.parts is None:
                self.parts = []
            self.parts.append(data)
        self.offset += len(data)

    @property
    def complete(self) -> bool:
        return 0 <= self.total <= self.offset

    def finish(self) -> Fetched:
        """The verified segment; raises CorruptOutput."""
        if self.spill_path is not None:
            if self.out is None:
                self.out = open(self.spill_path, "wb")  # noqa: SIM115 - closed just below
            self.out.close()
            self.out = None
            verify_file_segment(self.spill_path, 0, self.total)
            return Fetched(self.total, path=self.spill_path)
        data = b"".join(self.parts or ())
        verify_segment(data)
        return Fetched(self.total, data=data, checked=True)

    def abandon(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None


def fetch_segments(
    ctx: zmq.Context[Any],
    address: str,
    job: str,
    partition: int,
    wanted: list[Wanted],
    *,
    chunk: int,
    timeout: float,
    retries: int,
    keys: Keys | None = None,
    pool: SocketPool | None = None,
) -> tuple[dict[int, Fetched], dict[int, ShuffleError]]:
    """One partition of several map outputs on one server, over one connection.

    Each request asks for every segment not yet complete (up to
    ``MAX_FETCH_PARTS``), from where each got to, and ``chunk`` bytes in all;
    it waits ``timeout`` seconds, and on silence the REQ socket is closed and
    a new one opened (Lazy Pirate), up to ``retries`` tries. Returns the
    verified segments by map task, and the error of each that failed:
    ``CorruptOutput`` when its bytes failed their checks, else ``ShuffleError``
    (the server could not serve it, or went silent). With ``pool``, the
    connection is taken from it and given back after a clean exchange, so the
    next fetch from that server needs no new connection (nor handshake).
    """
    fetched: dict[int, Fetched] = {}
    failed: dict[int, ShuffleError] = {}
    todo = {w.map_task: w for w in wanted}
    sock = pool.take(address) if pool is not None else None
    try:
        while todo:
            asked = list(todo.values())[: protocol.MAX_FETCH_PARTS]
            request = protocol.Fetch(
                job,
                partition,
                [protocol.FetchPart(w.map_task, w.attempt, w.offset) for w in asked],
                chunk,
            )
            frames = protocol.encode(request)
            reply = None
            for _ in range(retries):
                if sock is None:
                    sock = ctx.socket(zmq.REQ)
                    sock.linger = 0
                    if keys is not None:
                        keys.client(sock, keys.member_public)
                    sock.connect(address)
                sock.send_multipart(frames)
                if sock.poll(int(timeout * 1000)):
                    try:
                        reply = protocol.decode(sock.recv_multipart())
                    except ProtocolError as exc:
                        reply = protocol.FetchError(f"malformed reply: {exc}", False)
                    break
                sock.close(0)
                sock = None
            if reply is None:
                reply = protocol.FetchError(f"no answer after {retries} tries", False)
            if isinstance(reply, protocol.FetchError):
                victims = [reply.map_task] if reply.map_task in todo else list(todo)
                cls = CorruptOutput if reply.corrupt else ShuffleError
                for m in victims:
                    todo.pop(m).abandon()
                    failed[m] = cls(f"{address}: {reply.reason}")
                continue
            if not isinstance(reply, protocol.Chunks) or not reply.parts:
                for w in todo.values():
                    w.abandon()
                    failed[w.map_task] = ShuffleError(f"{address}: unexpected reply")
                todo.clear()
                continue
            moved = False
            for part, data in zip(reply.parts, reply.blobs):
                want = todo.get(part.map_task)
                if want is None or part.offset != want.offset:
                    continue
                moved = True
                try:
                    want.take(part.total, data)
                    if want.complete:
                        del todo[want.map_task]
                        fetched[want.map_task] = want.finish()
                except CorruptOutput as exc:
                    todo.pop(want.map_task, None)
                    want.abandon()
                    failed[want.map_task] = CorruptOutput(f"{address}: {exc}")
                except OSError as exc:
                    todo.pop(want.map_task, None)
                    want.abandon()
                    failed[want.map_task] = ShuffleError(f"{address}: {exc}")
            if not moved:  # a reply that answers nothing asked: do not ask forever
                for w in todo.values():
                    w.abandon()
                    failed[w.map_task] = ShuffleError(f"{address}: a reply that asks nothing")
                todo.clear()
    finally:
        if sock is not None:
            if pool is not None and not todo:  # every request was answered: reusable
                pool.give(address, sock)
            else:
                sock.close(0)
        for w in todo.values():
            w.abandon()
    return fetched, failed


class SocketPool:
    """Idle REQ sockets to shuffle servers, one kept per address; thread-safe.

    A socket is given back only after its last request was answered, so a REQ
    socket from the pool is always ready to send (a stuck one is closed instead).
    """

    def __init__(self) -> None:
        self._idle: dict[str, zmq.Socket[Any]] = {}
        self._lock = threading.Lock()

    def take(self, address: str) -> zmq.Socket[Any] | None:
        with self._lock:
            return self._idle.pop(address, None)

    def give(self, address: str, sock: zmq.Socket[Any]) -> None:
        with self._lock:
            old = self._idle.pop(address, None)
            self._idle[address] = sock
        if old is not None:
            old.close(0)

    def close(self) -> None:
        with self._lock:
            for sock in self._idle.values():
                sock.close(0)
            self._idle.clear()


def local_segment(
    path: str, partition: int, reader: OutputReader | None = None, in_place: bool = False
) -> Fetched:
    """One partition of a map output on this worker's own disk, verified: read into
    memory, or (``in_place``) left in the file and read a block at a time later."""
    if in_place:
        try:
            if reader is not None:
                seg = reader.locate(path, partition)
            else:
                index = read_index(path)
                if not 0 <= partition < len(index):
                    raise ShuffleError(f"{path}: no partition {partition}")
                seg = index[partition]
        except FileNotFoundError as exc:
            raise ShuffleError(f"{path}: missing") from exc
        verify_file_segment(path, seg.offset, seg.length)
        return Fetched(seg.length, path=path, offset=seg.offset, in_place=True)
    try:
        if reader is None:
            length, data = read_segment(path, partition)
        else:
            length, data = reader.read(path, partition)
    except FileNotFoundError as exc:
        raise ShuffleError(f"{path}: missing") from exc
    verify_segment(data)
    return Fetched(length, data=data, checked=True)


def local_segments(
    reader: OutputReader, directory: str, partition: int, wanted: list[Wanted]
) -> tuple[dict[int, Fetched], dict[int, ShuffleError]]:
    """One partition of several map outputs in ``directory`` (a job's, on this worker's
    disk), each verified: read into memory in one batch, or (a ``Wanted`` with a
    spill path: past reduce_memory) left in place and read a block at a time later.
    Returns what ``fetch_segments`` does."""
    fetched: dict[int, Fetched] = {}
    failed: dict[int, ShuffleError] = {}
    paths = {
        w.map_task: os.path.join(directory, map_output_name(w.map_task, w.attempt)) for w in wanted
    }
    in_memory = [w for w in wanted if w.spill_path is None]
    read = reader.read_many(partition, ((paths[w.map_task], 0) for w in in_memory))
    for w, got in zip(in_memory, read):
        try:
            if isinstance(got, Exception):
                raise got
            length, data = got
            verify_segment(data)
            fetched[w.map_task] = Fetched(length, data=data, checked=True)
        except FileNotFoundError:
            failed[w.map_task] = ShuffleError(f"{paths[w.map_task]}: missing")
        except ShuffleError as exc:
            failed[w.map_task] = exc
        except (OSError, ValueError) as exc:
            failed[w.map_task] = ShuffleError(str(exc))
    for w in wanted:
        if w.spill_path is not None:
            try:
                fetched[w.map_task] = local_segment(paths[w.map_task], partition, reader, True)
            except ShuffleError as exc:
                failed[w.map_task] = exc
            except OSError as exc:
                failed[w.map_task] = ShuffleError(str(exc))
    return fetched, failed
