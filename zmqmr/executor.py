"""The executor: a process that runs one attempt at a time for its worker.

User code runs here and only here. The attempt itself is the map side's
(``zmqmr.mapside``: split to map output file) or the reduce side's
(``zmqmr.reduceside``: map outputs to part file); this module is the process
around them: its loop, the job's unpickled functions, counters, progress and
the report of an attempt's end. Every file name comes from ``zmqmr.layout``.

The worker talks to its executors over a multiprocessing pipe, with the typed
objects of ``zmqmr.protocol``::

    worker -> executor: RunAttempt, Relocate (while a reduce waits), DropJob
    executor -> worker: AttemptProgress, Done, Failed, FetchFailed

An executor dies with its worker: ``PR_SET_PDEATHSIG`` covers SIGKILL of the
worker, and a closed pipe covers the rest.

Its position lives in a small file the worker made for its slot, mapped into
memory (``POSITION``: the attempt, and the index of the record a map under
skip_bad_records is mapping, else -1): a store per record, no system call,
and the worker reads it after the executor dies of a record (a segfault,
``os._exit``, the kernel's OOM killer), the paper's "last gasp" without a
signal handler that could not run anyway.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import mmap
import os
import signal
import struct
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from . import (
    layout,
    mapside,
    outputreader,
    packs,
    profiling,
    protocol,
    reduceside,
    tasklogs,
    userfn,
)
from .config import WorkerSettings
from .errors import ProtocolError
from .mapside import RecordFailed
from .security import MEMBER, Keys, load_keys

PR_SET_PDEATHSIG = 1
_COUNTERS = protocol.Report.FIELDS["counters"]


def check_counters(counters: dict[str, int]) -> None:
    """Raise ValueError, saying why, if an attempt's counters do not fit in its DONE
    (the master would refuse it): so the attempt fails, rather than its worker."""
    try:
        _COUNTERS.check(counters, "counters")
    except ProtocolError as exc:
        raise ValueError(f"this attempt's counters cannot be reported: {exc}") from None


#: An executor's position: (attempt, index of the record being mapped or -1).
POSITION = struct.Struct("<qq")
PROGRESS_EVERY = 0.5  # seconds between progress reports
#: A map attempt whose input and output together are smaller than this leaves too
#: little freed heap to be worth a malloc_trim (a system call per attempt).
SMALL_BYTES = 1 << 20
#: Packs held open at most (one per job; a job's pack is closed at its DropJob, which
#: an executor whose attempt failed is not sent).
MAX_PACKS = 16


_libc: Any = None


def release_memory() -> None:
    """Give the heap an attempt freed back to the system (glibc keeps it otherwise).

    The executor lives on across attempts: without this, a map attempt's
    buffers stay in its RSS through the reduce that runs next.
    """
    global _libc
    if not sys.platform.startswith("linux"):
        return
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None)
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


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


class Executor:
    def __init__(
        self,
        conn: Connection,
        data_dir: str,
        shuffle_address: str,
        settings: WorkerSettings,
        keys: Keys | None = None,
        position: Any = None,
    ) -> None:
        self.conn = conn
        #: Two int64s shared with the worker (POSITION), or None.
        self.position = position
        self.keys = keys
        self.data_dir = data_dir
        self.shuffle_address = shuffle_address
        self.settings = settings
        self.jobs: dict[str, dict[str, Any]] = {}
        self.reader = outputreader.OutputReader()
        self.reduce_side = reduceside.ReduceSide(
            conn, data_dir, shuffle_address, settings, keys, self.reader, self.progress
        )
        self._attempt = 0
        self._next_progress = 0.0
        self._capture: tasklogs.Capture | None = None
        self._logs_root = tasklogs.logs_root(data_dir)
        self._job_dirs: set[str] = set()  # jobs whose directory this executor has made
        #: Per job, the pack this executor appends its small map outputs to (zmqmr.packs).
        self.packs: dict[str, packs.PackWriter] = {}
        self._bytes = 0  # what the running attempt read and wrote, roughly
        self.profile = profiling.Profile("executor")

    # -- loop ---------------------------------------------------------------

    def serve(self) -> None:
        self.profile.start()
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                return
            if isinstance(msg, protocol.RunAttempt):
                self.run(msg)
            elif isinstance(msg, protocol.DropJob):
                self.jobs.pop(msg.job, None)
                pack = self.packs.pop(msg.job, None)
                if pack is not None:
                    pack.close()
                self._job_dirs.discard(msg.job)  # the worker removes the directory
                self.reader.forget(layout.job_dir(self.data_dir, msg.job) + os.sep)
                self.profile.dump()  # a job's end: the worker kills executors, never asks

    def progress(self, fraction: float) -> None:
        now = time.monotonic()
        if now >= self._next_progress:
            self._next_progress = now + PROGRESS_EVERY
            if self._capture is not None:
                self._capture.maybe_flush()  # a running attempt's output can be read
            self.conn.send(protocol.AttemptProgress(self._attempt, min(1.0, max(0.0, fraction))))

    def run(self, msg: protocol.RunAttempt) -> None:
        """Run one attempt, its user code's stdout, stderr and log records captured."""
        self._capture = tasklogs.Capture(self._logs_root, msg.job, msg.kind, msg.task, msg.attempt)
        try:
            with self._capture:
                self._run(msg)
        finally:
            self._capture = None
            if msg.kind != "map" or self._bytes >= SMALL_BYTES:
                release_memory()

    def _run(self, msg: protocol.RunAttempt) -> None:
        attempt, job_id, task, spec = msg.attempt, msg.job, msg.task, msg.spec
        self._attempt = attempt
        self._bytes = 0
        self._next_progress = time.monotonic() + PROGRESS_EVERY
        counters: dict[str, int] = {}
        previous = userfn.counting(counters)
        record = None
        track = None
        if self.position is not None:
            self.position[1] = -1
            self.position[0] = attempt
            if msg.kind == "map" and spec.track_records:
                track = self.position
        try:
            if msg.code is not None:
                self.jobs[job_id] = cloudpickle.loads(msg.code)
            fns = self.jobs[job_id]
            if spec.split is not None:
                self._bytes = mapside.split_bytes(spec.split, msg.records)
            if msg.code is not None or job_id not in self._job_dirs:
                os.makedirs(layout.job_dir(self.data_dir, job_id), exist_ok=True)
                self._job_dirs.add(job_id)
            if msg.kind == "map":
                report = mapside.run_map(
                    fns,
                    job_id,
                    task,
                    attempt,
                    spec,
                    msg.records,
                    counters,
                    data_dir=self.data_dir,
                    settings=self.settings,
                    progress=self.progress,
                    track=track,
                    pack=self._pack(job_id),
                )
                result = None
            else:
                report, result = self.reduce_side.run_reduce(
                    fns, job_id, task, attempt, spec, counters
                )
            report.counters = counters
            check_counters(counters)
            self._bytes += report.bytes
        except RecordFailed as exc:
            cause = exc.__cause__ or exc
            record = exc.index
            self._fail(attempt, cause, record)
            return
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the user's code
            self._fail(attempt, exc, record)  # raised it (this process ignores SIGINT)
            return
        finally:
            userfn.counting(previous)
        if self._capture is not None:
            self._capture.flush("done")
        self.conn.send(protocol.Done(attempt, report, blobs=[] if result is None else [result]))

    def _pack(self, job_id: str) -> packs.PackWriter:
        pack = self.packs.get(job_id)
        if pack is None:
            while len(self.packs) >= MAX_PACKS:  # jobs whose DropJob this executor never got
                self.packs.pop(next(iter(self.packs))).close()
            where = functools.partial(layout.pack_path, self.data_dir, job_id)
            pack = self.packs[job_id] = packs.PackWriter(where)
        return pack

    def _fail(self, attempt: int, exc: BaseException, record: int | None) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log = ""
        if self._capture is not None:
            self._capture.flush("failed")
            log = self._capture.error_tail()
        error = protocol.ErrorInfo.make(type(exc).__name__, str(exc), tb, log=log)
        self.conn.send(protocol.Failed(attempt, "user", error, record))


def main(
    conn: Connection,
    parent_pid: int,
    data_dir: str,
    shuffle_address: str | None,
    settings: WorkerSettings,
    keys_dir: str | None = None,
    position_path: str | None = None,
) -> None:
    """Entry point of an executor process, spawned or forked (zmqmr.worker); a forked
    one (``shuffle_address`` None) reads the address from its pipe first."""
    die_with_parent(parent_pid)
    if shuffle_address is None:
        try:
            shuffle_address = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the worker went before it started
    # Once, not per attempt: each attempt's log capture needs INFO, and changing the
    # root logger's level clears the cache of every logger.
    logging.getLogger().setLevel(logging.INFO)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    keys = load_keys(keys_dir, MEMBER) if keys_dir else None
    position = _map_position(position_path) if position_path else None
    Executor(conn, data_dir, shuffle_address, settings, keys, position).serve()
    os._exit(0)


def _map_position(path: str) -> Any:
    """The slot's position file, mapped: a memoryview of two int64s."""
    try:
        with open(path, "r+b") as f:
            mm = mmap.mmap(f.fileno(), POSITION.size)
    except (OSError, ValueError):
        return None  # no last gasp then: a crash fails the attempt unpinned
    return memoryview(mm).cast("q")
