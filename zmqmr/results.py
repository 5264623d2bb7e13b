"""The master's result store: the result bytes of finished jobs, until a client collects them.

``MasterState`` decides when a result is kept (``StoreResult``) and when it
goes (``DropResult``: collected or expired); it keeps none of the bytes. The
store keeps them in memory up to ``limit`` bytes over all jobs, and in files
beyond that, so a flood of uncollected results cannot grow the master without
bound. With a state directory every result is also written to
``DIR/results/JOB`` (fsynced before the job's end is journaled), so a master
started again can hand it out; without one, the files beyond ``limit`` go to
a temporary directory removed at ``close``.

A file: MAGIC | CRC-32 of the rest (u32) | blob count (u32) | (u64 length | bytes)*.
A file that fails its checksum reads as missing: the client is told the result
was lost rather than handed wrong bytes.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
import zlib

log = logging.getLogger(__name__)

MAGIC = b"ZMQMRRS1"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class ResultStore:
    def __init__(self, limit: int, directory: str | None = None) -> None:
        self.limit = limit
        self.durable = directory is not None
        self._dir = directory
        self._memory: dict[str, list[bytes]] = {}
        self.in_memory = 0  # bytes held in _memory
        if directory is not None:
            os.makedirs(directory, mode=0o700, exist_ok=True)

    def _path(self, job_id: str) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="zmqmr-results-")
        return os.path.join(self._dir, job_id)

    def put(self, job_id: str, blobs: list[bytes]) -> None:
        size = sum(map(len, blobs))
        fits = self.in_memory + size <= self.limit
        if self.durable or not fits:
            self._write(self._path(job_id), blobs)
        if fits:
            self._memory[job_id] = blobs
            self.in_memory += size

    def get(self, job_id: str) -> list[bytes] | None:
        """The blobs of ``job_id``, or None if they are not here (or damaged)."""
        blobs = self._memory.get(job_id)
        if blobs is not None:
            return blobs
        if self._dir is None:
            return None
        return _read(os.path.join(self._dir, job_id))

    def drop(self, job_id: str) -> None:
        blobs = self._memory.pop(job_id, None)
        if blobs is not None:
            self.in_memory -= sum(map(len, blobs))
        if self._dir is not None:
            try:
                os.unlink(os.path.join(self._dir, job_id))
            except FileNotFoundError:
                pass

    def retain(self, job_ids: set[str]) -> None:
        """After recovery: remove the files of results no job waits for any more."""
        if self._dir is None:
            return
        for name in os.listdir(self._dir):
            if name not in job_ids:
                _remove(self._dir, name)

    def close(self) -> None:
        self._memory.clear()
        self.in_memory = 0
        if not self.durable and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @staticmethod
    def _write(path: str, blobs: list[bytes]) -> None:
        body = [_U32.pack(len(blobs))]
        for blob in blobs:
            body += [_U64.pack(len(blob)), blob]
        crc = 0
        for part in body:
            crc = zlib.crc32(part, crc)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(MAGIC + _U32.pack(crc))
            for part in body:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _remove(directory: str, name: str) -> None:
    try:
        os.unlink(os.path.join(directory, name))
    except OSError:
        pass


def _read(path: str) -> list[bytes] | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < 12 or data[:8] != MAGIC:
        log.error("result file %s is damaged", path)
        return None
    (crc,) = _U32.unpack_from(data, 8)
    body = memoryview(data)[12:]
    if zlib.crc32(body) != crc:
        log.error("result file %s fails its checksum", path)
        return None
    (count,) = _U32.unpack_from(body, 0)
    pos, blobs = 4, []
    for _ in range(count):
        (size,) = _U64.unpack_from(body, pos)
        pos += 8
        blobs.append(bytes(body[pos : pos + size]))
        pos += size
    return blobs
