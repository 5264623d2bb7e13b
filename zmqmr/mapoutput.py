"""Map outputs on disk: the file format, its writer and its readers.

File format (one file per map attempt)::

    segment 0 | segment 1 | ... | segment R-1 | index | footer

A segment is a run of blocks holding the sorted ``(key, values)`` groups of
one partition. A block is ``<codec:u8><length:u32><crc32:u32>`` then
``length`` bytes of payload: parts, each a list of groups (or, for groups
of one value each, the flat tuple ``(keys, values)``), pickled without a memo (fast,
and exact about types, which marshal is not: it turns a bytearray or an
array into bytes), or with one for cyclic values, or with cloudpickle for
what plain pickle cannot name (closures, classes shipped by value, which keep
their slots and aliases: see ``pickling``); the checksum covers the codec and
length too. The index holds R entries ``<offset:u64><length:u64><groups:u64>``;
the footer is ``<index offset:u64><index crc32:u32>`` and a magic. A flipped
byte or a truncated file fails a checksum or a length and raises
``CorruptOutput``: corrupt data is never decoded, let alone reduced.

Writers: ``MapOutputWriter`` (one segment per partition, then the index and
footer, written to a temporary name and renamed), ``write_run`` (one segment
alone: a spilled run, a reduce's merged input). Readers: the decoders of a
segment in memory or in a file (many small segments at once: ``bad_segments``
and ``merge_segments``, in C where ``zmqmr._speedups`` is built);
``zmqmr.outputreader`` reads segments of these files by partition
(``OutputReader``, ``read_index``, ``read_segment``), and ``zmqmr.shuffle``
serves and fetches them over the network. Imports: the standard library,
zmqmr's native, pickling and errors modules; no ``zmq``.
"""

from __future__ import annotations

import io
import itertools
import operator
import os
import pickle
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import native, packs, pickling
from .errors import CorruptOutput

#: Without it segments are checked and grouped in Python, more slowly.
speedups: Any = native.load()

_first = operator.itemgetter(0)
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


# -- blocks ------------------------------------------------------------------------


def _pickle_fast(obj: Any) -> bytes:
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo: several times faster on streams of small tuples
    pickler.dump(obj)
    return buf.getvalue()


def _checksum(codec: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(bytes((codec,)) + len(payload).to_bytes(4, "little")))


def _pickle_part(groups: Any) -> bytes:
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
            flat = _flat(piece) if used == 2 * len(piece) else None
            data = _pickle_part(piece if flat is None else flat)
            del flat
            parts.append(data)
            size += len(data)
            budget = _budget(len(data) / used)
            if size >= target:
                yield _block(parts)
                parts, size = [], 0
    if parts:
        yield _block(parts)


#: Pairs a flat part takes at most (see ``encode_pairs``).
PAIRS_PART = 4096


def encode_pairs(
    pairs: list[tuple[Any, Any]],
    target: int = BLOCK_BYTES,
    counted: _Counted | None = None,
    consume: bool = False,
) -> Iterator[list[bytes]]:
    """Sorted ``(key, value)`` pairs (keys may repeat) as blocks, like ``encode_groups``
    of their one-value groups, but with each part flat where its keys are distinct:
    the tuple ``(keys, values)`` of two lists, built in C and (un)pickled several
    times faster than a list of ``(key, [value])`` groups. ``decode_parts`` gives
    such a part back as groups. A part whose keys repeat is written as groups, each
    key's run of values joined in one (a hot key's values take one group per part).

    A part takes as many pairs as PART_BYTES holds at the last part's bytes per
    pair (PAIRS_PART at most): the first part's size is planned from a sample.
    Whether keys repeat is checked a part at a time, while its pairs are in the
    CPU's caches. ``counted``, given, gets the number of groups written added to
    its ``n``. With ``consume``, ``pairs`` gives each part's pairs up as it is
    encoded (its items become None): those the list alone held are freed then,
    while they are in the caches, not in a pass over the list after the sort
    has scattered them.
    """
    if not pairs:
        return
    try:
        per_pair = len(_pickle_fast(pairs[:16])) / min(len(pairs), 16)
    except Exception:  # the part's own encoder will say what is wrong
        per_pair = 64.0
    parts: list[bytes] = []
    size = 0
    groups = 0
    i, n = 0, len(pairs)
    eq = operator.eq
    while i < n:
        take = max(1, min(PAIRS_PART, int(PART_BYTES / max(1.0, per_pair))))
        chunk = pairs[i : i + take]
        got = len(chunk)
        if consume:
            gone: Any = itertools.repeat(None, got)
            pairs[i : i + got] = gone
        i += got
        keys = list(map(_first, chunk))
        if any(map(eq, keys, itertools.islice(keys, 1, None))):
            runs = itertools.groupby(chunk, _first)
            part: Any = [(k, list(map(_second, run))) for k, run in runs]
            groups += len(part)
        else:
            part = (keys, list(map(_second, chunk)))
            groups += got
        del keys, chunk
        data = _pickle_part(part)
        del part
        parts.append(data)
        size += len(data)
        per_pair = len(data) / got
        if size >= target:
            yield _block(parts)
            parts, size = [], 0
    if parts:
        yield _block(parts)
    if counted is not None:
        counted.n += groups


def _flat(groups: list[Group]) -> tuple[list[Any], list[Any]] | None:
    """Groups of one value each as the flat part ``(keys, values)``, else None."""
    runs = list(map(_second, groups))
    if not set(map(type, runs)) <= _SEQUENCES or set(map(len, runs)) != {1}:
        return None
    return list(map(_first, groups)), list(map(_first, runs))


_SEQUENCES = frozenset({list, tuple})


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
        part = pickle.Unpickler(f).load()
        if type(part) is tuple:  # a flat part (encode_pairs): its pairs' one-value groups
            keys, values = part
            part = list(zip(keys, zip(values)))
        yield part


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
    """Check every block of a segment held in memory; raises CorruptOutput.

    A loop of its own rather than ``iter_blocks``: a reduce at large R checks
    many segments of a block or two each, and the generator would cost more
    than the checksum."""
    pos, end = 0, len(data)
    unpack_from = BLOCK_HEADER.unpack_from
    crc32 = zlib.crc32
    while pos < end:
        if end - pos < BLOCK_HEADER.size:
            raise CorruptOutput(f"truncated block header at byte {pos}")
        codec, length, crc = unpack_from(data, pos)
        pos += BLOCK_HEADER.size
        if codec not in CODECS:
            raise CorruptOutput(f"unknown block codec {codec} at byte {pos}")
        if end - pos < length:
            raise CorruptOutput(f"truncated block: {length} bytes declared, {end - pos} left")
        head = crc32(data[pos - BLOCK_HEADER.size : pos - 4])  # the codec and length
        block = data[pos : pos + length] if length < 65536 else memoryview(data)[pos : pos + length]
        if crc32(block, head) != crc:
            raise CorruptOutput(f"block checksum mismatch at byte {pos}")
        pos += length


#: How a part pickled in one frame starts (protocol 4 or 5, then FRAME and its length).
_ONE_FRAME = (b"\x80\x05\x95", b"\x80\x04\x95")
_FRAME_LENGTH = struct.Struct("<Q")


def decode_segments(datas: Iterable[bytes]) -> list[Group]:
    """Every group of the verified segments ``datas`` (in memory), in order, in one list.

    For many small segments (a reduce at large R gets a key or two from each
    map output): one loop over their blocks, and a block of one part pickled
    in one frame (its length is then the frame's) is unpickled with one
    ``pickle.loads``; other blocks go through ``decode_parts``. The blocks'
    lengths and codecs are checked; their checksums are not (they were).
    """
    out: list[Group] = []
    extend = out.extend
    loads = pickle.loads
    unpack_from = BLOCK_HEADER.unpack_from
    frame_length = _FRAME_LENGTH.unpack_from
    one_frame = _ONE_FRAME
    for data in datas:
        pos, end = 0, len(data)
        view = memoryview(data) if end >= 65536 else data
        while pos < end:
            if end - pos < BLOCK_HEADER.size:
                raise CorruptOutput(f"truncated block header at byte {pos}")
            codec, length, _ = unpack_from(data, pos)
            pos += BLOCK_HEADER.size
            if codec not in CODECS or end - pos < length:
                raise CorruptOutput(f"bad block header at byte {pos}")
            payload = data[pos : pos + length] if length < 65536 else view[pos : pos + length]
            pos += length
            if (
                codec == CODEC_PICKLE
                and length > 11
                and payload[:3] in one_frame
                and frame_length(payload, 3)[0] + 11 == length
            ):
                part = loads(payload)
                if type(part) is tuple:  # flat: its pairs' one-value groups
                    keys, values = part
                    extend(zip(keys, zip(values)))  # type: ignore[arg-type]
                else:
                    extend(part)
            else:
                for part in decode_parts(codec, payload):
                    extend(part)
    return out


def bad_segments(datas: Sequence[bytes]) -> list[int]:
    """The indexes of the segments of ``datas`` (in memory) that ``verify_segment``
    refuses, in one loop: a reduce at large R gets a block or two from each of
    hundreds of map outputs, and a call per segment costs more than its checksum."""
    if speedups is not None:
        bad = []
        start = 0
        while (i := speedups.verify_segments(datas[start:] if start else datas)) >= 0:
            bad.append(start + i)  # what follows a bad one is checked on from there
            start += i + 1
        return bad
    out = []
    for i, data in enumerate(datas):
        try:
            verify_segment(data)
        except CorruptOutput:
            out.append(i)
    return out


def _merge_part(part: Any, groups: dict[Any, list[Any]]) -> None:
    """A decoded part's groups into ``groups`` (see ``merge_segments``)."""
    if type(part) is tuple:  # flat (encode_pairs): its pairs' one-value groups
        keys, values = part
        part = zip(keys, zip(values))
    get = groups.get
    for key, values in part:
        held = get(key)
        if held is None:
            groups[key] = list(values)
        else:
            held.extend(values)


def merge_segments(datas: Sequence[bytes], groups: dict[Any, list[Any]]) -> None:
    """Every group of the verified segments ``datas`` (in memory, in order) into
    ``groups``: a new key gets a list of its values, a key seen before has its
    values appended, so a key's values come in segment order. Lengths and codecs are checked
    (``CorruptOutput``), checksums are not. Decoded a part at a time, in C where the
    extension is built; else one segment at a time."""
    if speedups is not None:
        loads = pickle.loads
        speedups.merge_segments(datas, groups, loads, decode_parts, _merge_part, CorruptOutput)
        return
    for data in datas:
        _merge_part(decode_segments((data,)), groups)


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
    ``close``, so a reader never sees half a file. With a ``pack``, the output
    is built in memory while it is at most ``pack_bytes`` and, if it stays so,
    appended to the pack instead (``zmqmr.packs``: no file of its own); past
    that it goes on in its own file as without.
    """

    def __init__(
        self,
        path: str,
        num_partitions: int,
        pack: packs.PackWriter | None = None,
        pack_bytes: int = 0,
        task: int = 0,
        attempt: int = 0,
    ) -> None:
        self.path = path
        self.num_partitions = num_partitions
        self._tmp = f"{path}.tmp"
        self._pack = pack if pack_bytes > 0 else None
        self._pack_bytes = pack_bytes
        self._task, self._attempt = task, attempt
        self._f: Any
        if self._pack is not None:
            self._f = io.BytesIO()
        else:
            self._f = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._segments: list[Segment] = []
        self.bytes_written = 0
        #: Where the output went when it was packed (after ``close``), else None.
        self.entry: packs.Entry | None = None

    def _grown(self) -> None:
        """Past pack_bytes in memory: the output goes on in a file of its own."""
        if self._pack is not None and self._f.tell() > self._pack_bytes:
            data = self._f.getbuffer()
            f = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
            try:
                f.write(data)
            except BaseException:
                f.close()
                raise
            del data
            self._f, self._pack = f, None

    def write_segment(self, groups: Iterable[Group]) -> Segment:
        if len(self._segments) >= self.num_partitions:
            raise ValueError("more segments than partitions")
        start = self._f.tell()
        counted = _Counted(groups)
        for block in encode_groups(counted):
            self._f.writelines(block)
            self._grown()
        return self._segment(start, counted.n)

    def write_pairs(self, pairs: list[tuple[Any, Any]], consume: bool = False) -> Segment:
        """A segment of sorted ``(key, value)`` pairs (keys may repeat): ``encode_pairs``
        (with ``consume``, the list's items are given up as they are written)."""
        if len(self._segments) >= self.num_partitions:
            raise ValueError("more segments than partitions")
        start = self._f.tell()
        counted = _Counted(())
        for block in encode_pairs(pairs, counted=counted, consume=consume):
            self._f.writelines(block)
            self._grown()
        return self._segment(start, counted.n)

    def _segment(self, start: int, groups: int) -> Segment:
        seg = Segment(start, self._f.tell() - start, groups)
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
        if self._pack is not None and self.bytes_written <= self._pack_bytes:
            self.entry = self._pack.append(self._task, self._attempt, self._f.getvalue())
            self._f = io.BytesIO()
            return self._segments
        self._grown()  # the index took it past pack_bytes
        self._f.close()
        os.replace(self._tmp, self.path)
        return self._segments

    def abort(self) -> None:
        self._f.close()
        if self._pack is None:
            try:
                os.remove(self._tmp)
            except FileNotFoundError:
                pass
