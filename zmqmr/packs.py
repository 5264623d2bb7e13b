"""Packs: small map outputs appended to one file per executor and job.

Creating a file costs a small map attempt more than all the rest of it does
(on ext4 under load, 20-1,000 us of kernel time for a create and a rename;
an append to a file already open costs a few), so a map output of at most
``pack_bytes`` (``WorkerSettings``) is not a file of its own: it is appended,
whole, to its executor's pack for the job (``layout.pack_path``)::

    entry | entry | ...
    entry = header | the map output, byte for byte as its own file would hold it
    header = <magic:8s><map task:u64><attempt:u64><length:u64><crc32:u32>

The checksum covers the task, attempt and length (not the magic, which is
``LIVE``, or ``REMOVED`` once an attempt that lost is removed in place).
The map output inside keeps its own checksums, checked on every fetch.

An entry is appended with one ``write`` once its output is complete, and the
attempt is reported done only after that, so a reader is never sent to half
an entry. A pack has one writer (an executor; a new executor starts a pack of
its own), so entries never interleave. A reader stops at the first header it
cannot check (a torn append of a killed executor, a damaged byte, a cut):
what lies beyond is lost as a deleted file is, and those maps run again.
Imports: the standard library and ``zmqmr.layout`` only.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from . import layout

HEADER = struct.Struct("<8sQQQI")
LIVE = b"ZMQMRPK1"
REMOVED = b"ZMQMRPK0"
_CHECKED = struct.Struct("<QQQ")  # what the header's checksum covers


@dataclass(frozen=True, slots=True)
class Entry:
    """One map output in a pack: the bytes ``offset`` to ``offset + length`` of ``path``."""

    path: str
    task: int
    attempt: int
    offset: int
    length: int
    live: bool = True

    @property
    def header_offset(self) -> int:
        return self.offset - HEADER.size


def _header(task: int, attempt: int, length: int, magic: bytes = LIVE) -> bytes:
    checked = _CHECKED.pack(task, attempt, length)
    return HEADER.pack(magic, task, attempt, length, zlib.crc32(checked))


class PackWriter:
    """Appends map outputs to a pack named by ``new_path()``, made on the first append."""

    def __init__(self, new_path: Callable[[], str]) -> None:
        self.new_path = new_path
        self.path = ""
        self._fd: int | None = None
        self.size = 0

    def append(self, task: int, attempt: int, data: bytes) -> Entry:
        if self._fd is None:
            self.path, self.size = self.new_path(), 0
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o644)
        view = memoryview(_header(task, attempt, len(data)) + data)
        start = self.size
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except BaseException:
            self.close()  # what follows a torn entry is never read: the next goes to a new pack
            raise
        self.size += HEADER.size + len(data)
        return Entry(self.path, task, attempt, start + HEADER.size, len(data))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def scan(path: str, start: int = 0) -> tuple[list[Entry], int]:
    """The entries of a pack from byte ``start`` (removed ones too), and where reading
    stopped: the end of the last whole entry before the end or a header that fails."""
    entries: list[Entry] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return entries, start
    try:
        size = os.fstat(fd).st_size
        pos = start
        while pos + HEADER.size <= size:
            magic, task, attempt, length, crc = HEADER.unpack(os.pread(fd, HEADER.size, pos))
            if (
                magic not in (LIVE, REMOVED)
                or zlib.crc32(_CHECKED.pack(task, attempt, length)) != crc
            ):
                break
            end = pos + HEADER.size + length
            if end > size:
                break  # being appended, or cut
            entries.append(Entry(path, task, attempt, pos + HEADER.size, length, magic == LIVE))
            pos = end
    finally:
        os.close(fd)
    return entries, pos


def packs_in(directory: str) -> list[str]:
    """The packs in a job's directory."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, n) for n in names if layout.is_pack_name(n))


def live_entries(directory: str) -> list[Entry]:
    """Every map output held in the packs of a job's directory."""
    return [e for path in packs_in(directory) for e in scan(path)[0] if e.live]


def remove(entry: Entry) -> None:
    """Remove an entry in place: no reader finds it after this."""
    header = _header(entry.task, entry.attempt, entry.length, REMOVED)
    try:
        fd = os.open(entry.path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.pwrite(fd, header, entry.header_offset)
    finally:
        os.close(fd)


class PackIndex:
    """Where each map output packed in one job's directory lies, by output name
    (``layout.map_output_name``); packs are read on from where they were last read
    when a name is not known yet. Not thread-safe: its owner locks."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._read: dict[str, int] = {}  # pack -> bytes read so far
        self._entries: dict[str, Entry] = {}

    def known(self, name: str) -> Entry | None:
        """The entry of ``name`` if the packs read so far hold it (nothing is read)."""
        return self._entries.get(name)

    def find(self, name: str) -> Entry | None:
        entry = self._entries.get(name)
        if entry is None:
            self._read_on()
            entry = self._entries.get(name)
        return entry

    def _read_on(self) -> None:
        for path in packs_in(self.directory):
            entries, end = scan(path, self._read.get(path, 0))
            self._read[path] = end
            for e in entries:
                name = layout.map_output_name(e.task, e.attempt)
                if e.live:
                    self._entries[name] = e
                else:
                    self._entries.pop(name, None)

    def forget(self, name: str) -> None:
        self._entries.pop(name, None)
