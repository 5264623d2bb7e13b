"""Reading map outputs by partition: ``OutputReader`` keeps files open with their
checked index between reads (for the shuffle server and the executors), and holds
small outputs' segments in memory; ``read_index`` and ``read_segment`` read once.

The file format and the decoders are ``zmqmr.mapoutput``'s. Imports: the standard
library and zmqmr's mapoutput, native, packs and errors modules; no ``zmq``.
"""

from __future__ import annotations

import ctypes
import operator
import os
import select
import struct
import sys
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import native, packs
from .errors import CorruptOutput, ShuffleError
from .mapoutput import FOOTER, INDEX_ENTRY, MAGIC, Segment


def _read_raw_index(f: Any, path: str, base: int = 0, size: int = -1) -> tuple[bytes, int]:
    """The checked index bytes of an open map output file, and where the index starts.

    The output is the whole file, or (in a pack) its ``size`` bytes from ``base``;
    offsets in its index, and the one returned, count from ``base``."""
    if size < 0:
        size = os.fstat(f.fileno()).st_size
    if size < FOOTER.size:
        raise CorruptOutput(f"{path}: too short for a footer")
    footer = os.pread(f.fileno(), FOOTER.size, base + size - FOOTER.size)
    if len(footer) != FOOTER.size:
        raise CorruptOutput(f"{path}: truncated")
    index_offset, crc, magic = FOOTER.unpack(footer)
    if magic != MAGIC or index_offset > size - FOOTER.size:
        raise CorruptOutput(f"{path}: bad footer")
    index = os.pread(f.fileno(), size - FOOTER.size - index_offset, base + index_offset)
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


# -- which directories changed ------------------------------------------------------

_IN_MODIFY, _IN_ATTRIB, _IN_MOVED_FROM, _IN_MOVED_TO = 0x2, 0x4, 0x40, 0x80
_IN_CREATE, _IN_DELETE, _IN_DELETE_SELF, _IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
_IN_Q_OVERFLOW, _IN_IGNORED = 0x4000, 0x8000
#: Any change to a file in the directory, or to its list of names, or to itself.
_WATCHED = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
)
#: Without it a batch's reads of outputs held in memory are done in Python, more slowly.
speedups: Any = native.load()
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
_libc: Any = None


class DirWatch:
    """Which directories had anything change in them: Linux's inotify, one
    descriptor per reader, told of every write, cut, rename, creation and removal
    of a file in a directory watched (``add``), and of the directory's own removal.

    ``generation(d)`` is a number that changes whenever anything changes in ``d``
    (and differs from any it had before), or -1 if ``d`` is not watched: a file
    of ``d`` checked when its generation was ``g`` is as it was checked while the
    generation is still ``g``. Where inotify cannot be had (another system, the
    per-user limit of instances or watches reached), no directory is watched:
    the reader then checks each file, as without it. Not thread-safe: its reader
    locks.
    """

    def __init__(self) -> None:
        self.fd = -2  # not opened yet; -1: cannot be
        self._poll: Any = None
        self._wds: dict[int, str] = {}  # watch -> directory
        self._gens: dict[str, int] = {}  # directory watched -> its generation
        self._tick = 0

    def _open(self) -> bool:
        global _libc
        if self.fd == -2:
            self.fd = -1
            if sys.platform.startswith("linux"):
                try:
                    if _libc is None:
                        _libc = ctypes.CDLL(None, use_errno=True)
                    fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
                except (OSError, AttributeError):
                    fd = -1
                if fd >= 0:
                    self.fd = fd
                    self._poll = select.poll()
                    self._poll.register(fd, select.POLLIN)
        return self.fd >= 0

    def add(self, directory: str) -> None:
        """Watch ``directory``, before a file in it is opened; a failure (it is gone,
        a limit) leaves it unwatched."""
        if directory in self._gens or not self._open():
            return
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(directory), _WATCHED)
        if wd >= 0:
            self._wds[wd] = directory
            self._tick += 1
            self._gens[directory] = self._tick

    def generation(self, directory: str) -> int:
        if directory not in self._gens:
            return -1
        if self._poll.poll(0):
            self._drain()
        return self._gens.get(directory, -1)

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return
            except OSError:  # not to be trusted on: no directory is watched any more
                self.close()
                self.fd = -1
                return
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _, n = _EVENT.unpack_from(data, pos)
                pos += _EVENT.size + n
                self._tick += 1
                if mask & _IN_Q_OVERFLOW:  # events were lost: everything changed
                    self._gens = dict.fromkeys(self._gens, self._tick)
                    continue
                directory = self._wds.get(wd)
                if directory is None:
                    continue
                if mask & _IN_IGNORED:  # the directory is gone: no longer watched
                    del self._wds[wd]
                    del self._gens[directory]
                else:
                    self._gens[directory] = self._tick

    def remove(self, prefix: str) -> None:
        """Stop watching the directories under ``prefix``."""
        for wd, directory in list(self._wds.items()):
            if (directory + os.sep).startswith(prefix):
                del self._wds[wd]
                del self._gens[directory]
                _libc.inotify_rm_watch(self.fd, wd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = -2
        self._poll = None
        self._wds.clear()
        self._gens.clear()


@dataclass(slots=True)
class _Held:
    """A map output held open: its file (its own, or a pack), where in it the output
    starts, and its checked index."""

    f: Any
    fd: int
    file: str
    base: int
    index: bytes
    index_offset: int
    #: ``f`` is a pack's, shared by its outputs: closed with the reader, not with this.
    shared: bool = False
    #: A small output's segments, read at once when it was opened (``HOLD_BYTES``).
    held: bytes | None = None
    #: The directory of the output's name, which its reader watches (``DirWatch``),
    #: and the directory's generation when the file was last found whole with a name.
    directory: str = ""
    checked: int = -1

    def close(self) -> None:
        if not self.shared:
            self.f.close()

    def read(self, path: str, partition: int, offset: int, max_bytes: int) -> tuple[int, bytes]:
        """(segment length, up to ``max_bytes`` from ``offset``) of one partition: only
        this partition's entry of the index is unpacked."""
        index = self.index
        if not 0 <= partition < len(index) // INDEX_ENTRY.size:
            raise ShuffleError(f"{path}: no partition {partition}")
        start, length, _ = INDEX_ENTRY.unpack_from(index, partition * INDEX_ENTRY.size)
        if start + length > self.index_offset:
            raise CorruptOutput(f"{path}: segment past the index")
        if offset > length:
            raise ShuffleError(f"offset {offset} past the segment's {length} bytes")
        want = length - offset if max_bytes < 0 else min(max_bytes, length - offset)
        if self.held is not None:  # start + length is within it: checked above
            start += offset
            return length, self.held[start : start + want]
        data = os.pread(self.fd, want, self.base + start + offset)
        if len(data) != want:
            raise CorruptOutput(f"{path}: truncated segment")
        return length, data


#: An output whose segments take at most this many bytes has them read at once
#: when it is opened, and its segments are served from memory: a reducer at large
#: R reads one small segment of each output, which is a syscall each otherwise.
#: A reader holds at most ``max_open`` outputs (512 by default: 16 MiB at most).
#: The bytes held are checked as they are served, as read ones are; damage done in
#: place after the open is not seen (the bytes served are the output's own), a cut
#: is (``OutputReader._held``).
HOLD_BYTES = 32 * 1024


def _entries_end(index: bytes) -> int:
    """Where the last-ending segment of an index (``INDEX_ENTRY``s) ends, in C-level
    passes (an index has R entries, and a reducer opens hundreds of outputs)."""
    words = struct.unpack(f"<{len(index) // 8}Q", index)
    return max(map(operator.add, words[0::3], words[1::3]), default=0)


def _hold(held: _Held) -> _Held:
    """``held`` with its segments read, if it is small and every entry of its index
    lies within them (else each read checks and reports its own entry)."""
    end = held.index_offset
    if end <= HOLD_BYTES and _entries_end(held.index) <= end:
        data = os.pread(held.fd, held.index_offset, held.base)
        if len(data) == held.index_offset:  # else each read finds it truncated
            held.held = data
    return held


class OutputReader:
    """Reads segments of map outputs, keeping the most recent files open with their
    checked index: a reducer reads one segment of every map output, so without
    this every read would open a file and check its index again (O(M·R) opens).

    An output is named by its path (``layout.map_output_path``); one with no file
    of that name is looked for in the packs of its directory (``zmqmr.packs``).
    A map output is immutable once in place; each read (or batch of reads: a file
    once per batch) checks with ``fstat`` that the file held open still has a name
    (a removed output or pack, or one replaced by a rename, has none), so a removed
    or replaced output is never served from an old descriptor. The check is left
    out while nothing changed in the output's directory since the file was last
    checked (``DirWatch``: a reducer at large R reads one segment of hundreds of
    outputs per batch, and a system call each cost more than the rest of the read).
    Thread-safe.
    """

    def __init__(self, max_open: int = 512) -> None:
        self.max_open = max_open
        self._open: dict[str, _Held] = {}  # output path -> held
        self._packs: dict[str, packs.PackIndex] = {}  # directory -> its packs' outputs
        self._pack_files: dict[str, Any] = {}  # pack -> open for reading
        self._watch = DirWatch()
        self._lock = threading.Lock()

    def _generation(self, directory: str, gens: dict[str, int] | None) -> int:
        """``DirWatch.generation``, asked once per batch (``gens``) and directory."""
        if gens is None:
            return self._watch.generation(directory)
        gen = gens.get(directory)
        if gen is None:
            gen = gens[directory] = self._watch.generation(directory)
        return gen

    def _held(
        self, path: str, seen: dict[int, int] | None = None, gens: dict[str, int] | None = None
    ) -> _Held:
        """The output ``path`` held open; with ``seen`` (a batch's: descriptor -> size),
        a file checked in this batch already is not checked again (a pack's outputs
        share one file), nor one checked since anything last changed in its
        directory. An output whose file was cut short is not served from the
        segments it holds: its reads find the cut."""
        held = self._open.pop(path, None)
        if held is not None:
            gen = self._generation(held.directory, gens)
            if gen < 0 or gen != held.checked:
                size = _size(held.fd, seen)
                if size < 0:  # removed, or replaced by a rename
                    held.close()
                    held = None
                else:
                    held.checked = gen
                    if held.held is not None and size < held.base + held.index_offset:
                        held.held = None
        if held is None:
            held = self._open_output(path)
            while len(self._open) >= self.max_open:
                oldest = next(iter(self._open))
                self._open.pop(oldest).close()
        self._open[path] = held  # most recent last
        return held

    def _open_output(self, path: str) -> _Held:
        directory, name = os.path.split(path)
        self._watch.add(directory)  # first: what changes from here on is told
        gen = self._watch.generation(directory)
        held = self._open_file(path, directory, name)
        held.directory, held.checked = directory, gen
        return held

    def _open_file(self, path: str, directory: str, name: str) -> _Held:
        index = self._packs.get(directory)
        entry = None if index is None else index.known(name)
        if entry is None:  # not in a pack read so far: its own file, or a pack's new entry
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed on eviction or forget()
            except FileNotFoundError:
                entry = self._packed(path)
                if entry is None:
                    raise
            else:
                try:
                    return _hold(_Held(f, f.fileno(), path, 0, *_read_raw_index(f, path)))
                except BaseException:
                    f.close()
                    raise
        f = self._pack_file(entry.path)
        index_bytes, index_offset = _read_raw_index(f, path, entry.offset, entry.length)
        return _hold(
            _Held(f, f.fileno(), entry.path, entry.offset, index_bytes, index_offset, True)
        )

    def _pack_file(self, path: str) -> Any:
        """The pack ``path`` open for reading, one file for all its outputs."""
        f = self._pack_files.get(path)
        if f is not None and os.fstat(f.fileno()).st_nlink == 0:
            del self._pack_files[path]
            # its other outputs held open would read a closed (or reused) descriptor
            for name in [n for n, h in self._open.items() if h.f is f]:
                del self._open[name]
            f.close()
            f = None
        if f is None:
            f = self._pack_files[path] = open(path, "rb")  # noqa: SIM115 - closed in forget()
        return f

    def _packed(self, path: str) -> packs.Entry | None:
        directory, name = os.path.split(path)
        index = self._packs.get(directory)
        if index is None:
            index = self._packs[directory] = packs.PackIndex(directory)
        return index.find(name)

    def read(
        self, path: str, partition: int, offset: int = 0, max_bytes: int = -1
    ) -> tuple[int, bytes]:
        """(segment length, bytes from ``offset``) of one partition of a map output."""
        with self._lock:
            return self._held(path).read(path, partition, offset, max_bytes)

    def read_many(
        self, partition: int, wanted: Iterable[tuple[str, int]], max_bytes: int = -1
    ) -> list[tuple[int, bytes] | Exception]:
        """What ``read`` gives for each ``(path, offset)`` of ``wanted`` (or the error it
        raises), ``max_bytes`` in all: the list stops once they are spent. The lock is
        taken once for the batch: a reducer reads one small segment of many outputs."""
        out: list[tuple[int, bytes] | Exception] = []
        budget = max_bytes
        seen: dict[int, int] = {}
        gens: dict[str, int] = {}
        opened = self._open
        at = partition * INDEX_ENTRY.size
        entry = INDEX_ENTRY.unpack_from
        with self._lock:
            # Far from max_open, nothing is evicted soon: the order of use is not kept.
            lru = len(opened) >= self.max_open // 2
            fast = speedups is not None and not lru
            todo = wanted if type(wanted) is list else list(wanted)
            i = 0
            while True:
                # The common reads in C, up to the first that is not one: an output
                # held in memory (as below), or one whose file is read with pread.
                if fast:
                    serve = speedups.serve_held
                    i, budget = serve(out, todo, i, opened, at, max_bytes, budget, gens)
                if i >= len(todo) or (max_bytes >= 0 and budget <= 0):
                    break
                path, offset = todo[i]
                i += 1
                # What _held and _Held.read do, inline for the most common case: an
                # output held open with its segments in memory, its file whole and
                # with a name (checked since anything last changed in its directory,
                # or now). Anything else (a removal, a cut, an error) below.
                held = opened.get(path)
                data = None if held is None or not 0 <= at < len(held.index) else held.held
                if data is not None:
                    assert held is not None
                    gen = gens.get(held.directory)
                    if gen is None:
                        gen = gens[held.directory] = self._watch.generation(held.directory)
                    if gen >= 0 and gen == held.checked:
                        size = held.base + held.index_offset
                    else:
                        try:
                            size = _size(held.fd, seen)
                        except OSError:  # raised again, and reported, below
                            size = -1
                        if size >= held.base + held.index_offset:
                            held.checked = gen
                    start, length, _ = entry(held.index, at)  # within data (_hold)
                    if size >= held.base + held.index_offset and 0 <= offset <= length:
                        if lru:
                            del opened[path]
                            opened[path] = held  # the most recent last
                        want = length - offset if max_bytes < 0 else min(budget, length - offset)
                        start += offset
                        budget -= want
                        out.append((length, data[start : start + want]))
                        continue
                try:
                    got = self._held(path, seen, gens).read(path, partition, offset, budget)
                except (OSError, ValueError, ShuffleError) as exc:
                    out.append(exc)
                    continue
                budget -= len(got[1])
                out.append(got)
        return out

    def locate(self, path: str, partition: int) -> tuple[str, Segment]:
        """The file one partition of a map output lies in (its own, or a pack), and
        where in that file."""
        with self._lock:
            held = self._held(path)
            if not 0 <= partition < len(held.index) // INDEX_ENTRY.size:
                raise ShuffleError(f"{path}: no partition {partition}")
            seg = _entry(held.index, held.index_offset, partition, path)
            return held.file, Segment(held.base + seg.offset, seg.length, seg.groups)

    def remove_packed(self, path: str) -> None:
        """Remove the output ``path`` names from its pack, if it is in one."""
        with self._lock:
            entry = self._packed(path)
            held = self._open.pop(path, None)
            if held is not None:
                held.close()
            if entry is not None:
                packs.remove(entry)
                self._packs[os.path.dirname(path)].forget(os.path.basename(path))

    def forget(self, prefix: str = "") -> None:
        """Close the files under ``prefix`` (all of them by default)."""
        with self._lock:
            for path in [p for p in self._open if p.startswith(prefix)]:
                self._open.pop(path).close()
            for directory in [d for d in self._packs if (d + os.sep).startswith(prefix)]:
                del self._packs[directory]
            for path in [p for p in self._pack_files if p.startswith(prefix)]:
                self._pack_files.pop(path).close()
            if prefix:
                self._watch.remove(prefix)
            else:
                self._watch.close()


def read_segment(
    path: str, partition: int, offset: int = 0, max_bytes: int = -1
) -> tuple[int, bytes]:
    """(segment length, bytes from ``offset``) of one partition of a local map output
    (in a file of its own or in a pack)."""
    reader = OutputReader(1)
    try:
        return reader.read(path, partition, offset, max_bytes)
    finally:
        reader.forget()


def _size(fd: int, seen: dict[int, int] | None) -> int:
    """The size of the file ``fd`` is open on, -1 if it has no name left (removed, or
    replaced by a rename); with ``seen`` (a batch's: descriptor -> size), asked of the
    kernel once per file and batch."""
    size = None if seen is None else seen.get(fd)
    if size is None:
        st = os.fstat(fd)
        size = st.st_size if st.st_nlink else -1
        if seen is not None:
            seen[fd] = size
    return size
