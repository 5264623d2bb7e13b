"""The shuffle over the network: the server that serves map outputs, and the fetch.

The server is a REP socket in its own thread; a request names a job and a
partition, and map outputs by column (map task, attempt, offset); the server
builds each path itself, never taking one from the wire, and answers with the
segments' bytes in one blob and their lengths in one header.

A reducer fetches one partition of several map outputs from each server over
one REQ connection (``fetch_segments``, Lazy Pirate on silence, a
``SocketPool`` keeping connections between fetches), and reads this worker's
own outputs from disk without a socket (``local_segment``). Messages are
``zmqmr.protocol``'s ``Fetch``, ``Chunks`` and ``FetchError``; the files and
their checks are ``zmqmr.mapoutput``'s.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import zmq

from . import protocol
from .errors import CorruptOutput, ProtocolError, ShuffleError
from .layout import job_dir, map_output_name, map_output_path, map_output_paths
from .mapoutput import (
    Group,
    bad_segments,
    file_segment_blocks,
    file_segment_groups,
    segment_blocks,
    segment_groups,
    verify_file_segment,
    verify_segment,
)
from .outputreader import OutputReader
from .security import Keys
from .wakeup import StopEvent

log = logging.getLogger(__name__)

#: A fetch request is a few hundred bytes; anything much larger is refused by the socket.
MAX_REQUEST_BYTES = 64 * 1024


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
        self._stop = StopEvent()
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
            self._stop.close()
            raise self._error
        return self.address

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._stop.close()
        self.reader.forget()

    def forget_job(self, job_id: str) -> None:
        """Close the job's files held open (its outputs are being removed)."""
        self.reader.forget(job_dir(self.data_dir, job_id) + os.sep)

    def remove_packed(self, job_id: str, task: int, attempt: int) -> None:
        """Remove a map output from the pack that holds it, if one does (zmqmr.packs)."""
        self.reader.remove_packed(map_output_path(self.data_dir, job_id, task, attempt))

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
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._stop.fileno(), zmq.POLLIN)  # stop() wakes it at once
        with sock:
            while not self._stop.is_set():
                if sock not in dict(poller.poll(1000)):
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
                protocol.send_frames(sock, reply)

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
        jdir += os.sep
        maps = msg.maps
        paths = map_output_paths(jdir, maps, msg.attempts)
        wanted = zip(paths, msg.offsets)
        read = self.reader.read_many(msg.partition, wanted, msg.max_bytes)
        for m, got in zip(maps, read):
            if type(got) is not tuple:
                corrupt = isinstance(got, CorruptOutput)
                return protocol.encode(protocol.FetchError(str(got), corrupt, m))
        totals = [total for total, _ in read]  # type: ignore[misc]
        blobs = [data for _, data in read]  # type: ignore[misc]
        lengths = list(map(len, blobs))
        n = len(blobs)
        reply = protocol.Chunks(maps[:n], msg.offsets[:n], totals, lengths, blobs=[b"".join(blobs)])
        return protocol.encode(reply)


# -- the fetch ---------------------------------------------------------------------------


@dataclass(slots=True)
class Fetched:
    """A fetched segment: in memory (``data``) or in a local file (``path``, from
    ``offset``): a file of its own the reduce wrote, or (``in_place``) the map
    output itself on this worker's disk. Not frozen (one is made per segment, and
    a frozen dataclass's ``__init__`` costs three times as much); never changed."""

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


#: Segments fetched by map task: a ``Fetched``, or (asked for ``lean``) the bytes of a
#: segment held in memory and verified, with no object around them (a reduce at
#: large R gets hundreds of one-key segments, and a ``Fetched`` costs more than one).
Got = dict[int, "Fetched | bytes"]


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
        data = b"".join(self.parts or ())  # one part (most often) is joined without a copy
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
    got, failed = start_fetch(
        ctx,
        address,
        job,
        partition,
        wanted,
        chunk=chunk,
        timeout=timeout,
        retries=retries,
        keys=keys,
        pool=pool,
    ).result()
    return cast(dict[int, Fetched], got), failed


class Fetching:
    """A ``fetch_segments`` whose first request is on its way (``start_fetch``):
    ``result()`` waits for the answers, asking on for what they did not hold, and
    gives what ``fetch_segments`` does; ``close()`` gives up on it. So a reducer
    asks every other worker at once and reads its own outputs meanwhile, with no
    thread."""

    __slots__ = ("_steps", "_done")

    def __init__(
        self,
        steps: Generator[None, None, tuple[Got, dict[int, ShuffleError]]] | None,
        done: tuple[Got, dict[int, ShuffleError]] | None,
    ) -> None:
        self._steps = steps
        self._done = done

    def result(self) -> tuple[Got, dict[int, ShuffleError]]:
        if self._done is None:
            assert self._steps is not None
            try:
                next(self._steps)
            except StopIteration as stop:
                self._done = stop.value
            assert self._done is not None, "a fetch stopped twice"
        return self._done

    def close(self) -> None:
        if self._steps is not None:
            self._steps.close()  # its socket closed or given back (the finally below)


def start_fetch(
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
    lean: bool = False,
) -> Fetching:
    """``fetch_segments``, its first request sent: the answers wait in the socket
    until ``result()`` is asked for. With ``lean``, a segment whole in memory is
    given as its bytes (``Got``)."""
    steps = _fetch_steps(
        ctx, address, job, partition, wanted, chunk, timeout, retries, keys, pool, lean
    )
    try:
        next(steps)
    except StopIteration as stop:
        return Fetching(None, stop.value)
    return Fetching(steps, None)


def _fetch_steps(
    ctx: zmq.Context[Any],
    address: str,
    job: str,
    partition: int,
    wanted: list[Wanted],
    chunk: int,
    timeout: float,
    retries: int,
    keys: Keys | None,
    pool: SocketPool | None,
    lean: bool,
) -> Generator[None, None, tuple[Got, dict[int, ShuffleError]]]:
    """What ``fetch_segments`` does, stopping once just after its first send."""
    first = True
    fetched: Got = {}
    failed: dict[int, ShuffleError] = {}
    todo = {w.map_task: w for w in wanted}
    sock = pool.take(address) if pool is not None else None
    try:
        while todo:
            asked = list(todo.values())[: protocol.MAX_FETCH_PARTS]
            request = protocol.Fetch(
                job,
                partition,
                [w.map_task for w in asked],
                [w.attempt for w in asked],
                [w.offset for w in asked],
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
                protocol.send_frames(sock, frames)
                if first:
                    first = False
                    yield
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
            if not isinstance(reply, protocol.Chunks) or not reply.maps:
                for w in todo.values():
                    w.abandon()
                    failed[w.map_task] = ShuffleError(f"{address}: unexpected reply")
                todo.clear()
                continue
            moved = False
            blob = reply.blobs[0]
            pos = 0
            whole: list[tuple[int, int, bytes]] = []  # segments whole in one part
            for m, offset, total, n in zip(reply.maps, reply.offsets, reply.totals, reply.lengths):
                data = blob if n == len(blob) else blob[pos : pos + n]
                pos += n
                want = todo.get(m)
                if want is None or offset != want.offset:
                    continue
                moved = True
                if offset == 0 and want.total < 0 and n == total and not want.spill_path:
                    del todo[m]  # whole in one part (most often): checked below, no copies
                    whole.append((m, total, data))
                    continue
                try:
                    want.take(total, data)
                    if want.complete:
                        del todo[m]
                        fetched[m] = want.finish()
                except CorruptOutput as exc:
                    todo.pop(m, None)
                    want.abandon()
                    failed[m] = CorruptOutput(f"{address}: {exc}")
                except OSError as exc:
                    todo.pop(m, None)
                    want.abandon()
                    failed[m] = ShuffleError(f"{address}: {exc}")
            for m, total, data in whole:
                fetched[m] = data if lean else Fetched(total, data, None, 0, False, True)
            for i in bad_segments([data for _, _, data in whole]) if whole else ():
                m, _, data = whole[i]
                del fetched[m]
                try:
                    verify_segment(data)
                except CorruptOutput as exc:
                    failed[m] = CorruptOutput(f"{address}: {exc}")
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
    """One partition of a map output on this worker's own disk (its own file or a
    pack's entry), verified: read into memory, or (``in_place``) left in the file and
    read a block at a time later."""
    own = reader is None
    reader = reader or OutputReader(1)
    try:
        if in_place:
            file, seg = reader.locate(path, partition)
            verify_file_segment(file, seg.offset, seg.length)
            return Fetched(seg.length, path=file, offset=seg.offset, in_place=True)
        length, data = reader.read(path, partition)
    except FileNotFoundError as exc:
        raise ShuffleError(f"{path}: missing") from exc
    finally:
        if own:
            reader.forget()
    verify_segment(data)
    return Fetched(length, data=data, checked=True)


def local_segments(
    reader: OutputReader, directory: str, partition: int, wanted: list[Wanted], lean: bool = False
) -> tuple[Got, dict[int, ShuffleError]]:
    """One partition of several map outputs in ``directory`` (a job's, on this worker's
    disk), each verified: read into memory in one batch, or (a ``Wanted`` with a
    spill path: past reduce_memory) left in place and read a block at a time later.
    Returns what ``fetch_segments`` does (with ``lean``, what ``start_fetch`` does)."""
    fetched: Got = {}
    failed: dict[int, ShuffleError] = {}
    directory += os.sep
    in_memory = [w for w in wanted if w.spill_path is None]
    paths = map_output_paths(
        directory, [w.map_task for w in in_memory], [w.attempt for w in in_memory]
    )
    read = reader.read_many(partition, zip(paths, itertools.repeat(0)))
    # one segment per map output (many at large R): checked in one loop, and this
    # loop is kept lean
    for i in bad_segments([got[1] if isinstance(got, tuple) else b"" for got in read]):
        try:
            verify_segment(read[i][1])  # type: ignore[index]
        except CorruptOutput as exc:
            read[i] = exc
    for w, path, got in zip(in_memory, paths, read):
        try:
            if not isinstance(got, tuple):
                raise got
            fetched[w.map_task] = got[1] if lean else Fetched(got[0], got[1], None, 0, False, True)
        except FileNotFoundError:
            failed[w.map_task] = ShuffleError(f"{path}: missing")
        except ShuffleError as exc:
            failed[w.map_task] = exc
        except (OSError, ValueError) as exc:
            failed[w.map_task] = ShuffleError(str(exc))
    for w in wanted:
        if w.spill_path is not None:
            path = directory + map_output_name(w.map_task, w.attempt)
            try:
                fetched[w.map_task] = local_segment(path, partition, reader, True)
            except ShuffleError as exc:
                failed[w.map_task] = exc
            except OSError as exc:
                failed[w.map_task] = ShuffleError(str(exc))
    return fetched, failed
