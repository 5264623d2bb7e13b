"""The master's journal: an append-only file of typed entries in a state directory.

With ``zmqmr master --state-dir DIR`` the master writes what it must not
forget (accepted jobs with their blobs, completed tasks, job ends) to
``DIR/journal`` before it acts on it, and a master started again with the same
DIR reads it back (``replay``) through ``MasterState.handle``. This module
knows the file and nothing of what the entries mean.

The file::

    MAGIC (8 bytes) | format version (u32) | entries...
    entry: payload length (u32) | CRC-32 of the payload (u32) | payload
    payload: header length (u32) | JSON {kind, fields} | blob count (u32) | (u32 length | bytes)*

Each entry is an ``Entry``: a ``kind`` (a short name), a JSON object of
fields and opaque blobs. Appends are buffered and made durable together by
``sync`` (one write and one fsync for everything appended since: the shell
calls it once per loop turn, before sending what depends on the entries).
A torn last entry (the crash came mid-write) is cut off when the journal is
opened; any other damage (a bad checksum before the end, a foreign file, an
unknown format version) refuses to open, naming the file: misreading a job's
history is worse than stopping. ``rewrite`` replaces the whole file
atomically (a new file, fsync, ``os.replace``, fsync of the directory): that
is compaction. ``DIR/lock`` is held with ``flock`` while the journal is
open, so two masters cannot share a directory.

Imports: the standard library and ``zmqmr.errors`` only.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ClusterError

MAGIC = b"ZMQMRJNL"
#: Bumped whenever an entry's meaning or the framing changes; older files are refused.
VERSION = 1
JOURNAL = "journal"
LOCK = "lock"
#: What a state directory holds (the master's result files are under results/).
OURS = frozenset({JOURNAL, LOCK, JOURNAL + ".tmp", "results"})
_HEAD = struct.Struct(">8sI")
_FRAME = struct.Struct(">II")
_U32 = struct.Struct(">I")
#: No entry is larger than this (a job's code and records travel in one entry).
MAX_ENTRY = 4 * 1024 * 1024 * 1024 - 1


class StateDirError(ClusterError):
    """A state directory that cannot be used: held by another master, damaged, foreign."""


@dataclass(slots=True)
class Entry:
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    blobs: list[bytes] = field(default_factory=list)


def encode_entry(entry: Entry) -> bytes:
    header = json.dumps(
        {"kind": entry.kind, "fields": entry.fields}, separators=(",", ":"), allow_nan=False
    ).encode()
    parts = [_U32.pack(len(header)), header, _U32.pack(len(entry.blobs))]
    for blob in entry.blobs:
        parts += [_U32.pack(len(blob)), blob]
    payload = b"".join(parts)
    if len(payload) > MAX_ENTRY:
        raise ValueError(f"a journal entry of {len(payload)} bytes is too large")
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> Entry:
    (n,) = _U32.unpack_from(payload, 0)
    header = json.loads(payload[4 : 4 + n])
    pos = 4 + n
    (count,) = _U32.unpack_from(payload, pos)
    pos += 4
    blobs = []
    for _ in range(count):
        (size,) = _U32.unpack_from(payload, pos)
        pos += 4
        if pos + size > len(payload):
            raise ValueError("a blob runs past its entry")
        blobs.append(payload[pos : pos + size])
        pos += size
    if pos != len(payload) or not isinstance(header, dict):
        raise ValueError("malformed entry")
    kind, fields = header.get("kind"), header.get("fields")
    if not isinstance(kind, str) or not isinstance(fields, dict):
        raise ValueError("malformed entry")
    return Entry(kind, fields, blobs)


def read_entries(path: str) -> tuple[list[Entry], int]:
    """Every whole entry of the journal at ``path`` and the offset after the last one.

    A torn last entry (too short for its frame, or shorter than its length) is
    left out; any other damage raises StateDirError naming the file.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < _HEAD.size:
        if MAGIC.startswith(data[: len(MAGIC)]):
            return [], 0  # torn while its header was written: nothing was journaled yet
        raise StateDirError(f"{path} is not a zmqmr journal")
    magic, version = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise StateDirError(f"{path} is not a zmqmr journal (it starts with {data[:8]!r})")
    if version != VERSION:
        raise StateDirError(
            f"{path} is a journal of format version {version}; this zmqmr reads version "
            f"{VERSION} only. Finish its jobs with the zmqmr that wrote it, or remove the "
            "directory to start afresh"
        )
    entries: list[Entry] = []
    pos = _HEAD.size
    while pos < len(data):
        if pos + _FRAME.size > len(data):
            break  # torn frame header at the end
        size, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + size
        if end > len(data):
            break  # torn payload at the end
        payload = data[pos + _FRAME.size : end]
        if zlib.crc32(payload) != crc:
            if end == len(data):
                break  # the last entry, torn in place: ignored
            raise StateDirError(
                f"{path} is damaged: the entry at byte {pos} fails its checksum; "
                "refusing to guess what the master knew"
            )
        try:
            entries.append(_decode_payload(payload))
        except (ValueError, UnicodeDecodeError, struct.error) as exc:
            raise StateDirError(f"{path} is damaged: the entry at byte {pos}: {exc}") from None
        pos = end
    return entries, pos


class Journal:
    """The open journal of one state directory (its lock held until ``close``)."""

    def __init__(self, directory: str) -> None:
        self.dir = os.path.abspath(directory)
        self.path = os.path.join(self.dir, JOURNAL)
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            foreign = sorted(set(os.listdir(self.dir)) - OURS)
            if foreign:
                raise StateDirError(
                    f"{self.dir} is not a zmqmr state directory: it holds "
                    f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}; "
                    "give --state-dir an empty or new directory"
                )
            self._lock_fd = os.open(os.path.join(self.dir, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateDirError(f"cannot use {self.dir} as a state directory: {exc}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise StateDirError(
                f"{self.dir} is held by another master (its lock file {LOCK} is taken); "
                "one state directory serves one master"
            ) from None
        self._pending: list[bytes] = []
        self._file: Any = None
        self.size = 0

    def replay(self) -> list[Entry]:
        """The entries a previous master left (none in a new directory)."""
        try:
            entries, _ = read_entries(self.path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateDirError(f"cannot read {self.path}: {exc}") from None
        return entries

    def rewrite(self, entries: Iterable[Entry]) -> None:
        """Replace the journal with ``entries``, atomically (compaction)."""
        self.sync()
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(_HEAD.pack(MAGIC, VERSION))
            for entry in entries:
                f.write(encode_entry(entry))
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, self.path)
        _fsync_dir(self.dir)
        if self._file is not None:
            self._file.close()
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self.size = size

    def append(self, entry: Entry) -> None:
        """Buffer one entry; it is durable once ``sync`` returns."""
        if self._file is None:
            raise RuntimeError("the journal is written after replay and rewrite")
        self._pending.append(encode_entry(entry))

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def sync(self) -> None:
        """Write every buffered entry and fsync once."""
        if not self._pending or self._file is None:
            return
        data = b"".join(self._pending)
        self._pending = []
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.size += len(data)

    def close(self) -> None:
        try:
            self.sync()
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
