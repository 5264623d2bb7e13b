"""The worker: a DEALER to the master, executor processes, and a shuffle server.

The worker never runs user code itself. It registers (READY), heartbeats
(any message counts), hands each assignment to a free executor process
(started with ``spawn``, reused across attempts, killed when its attempt is
cancelled), relays progress and completions, and serves its map outputs from
a REP socket in its own thread. When the master falls silent for
``worker_timeout`` it drops its running attempts (the master will have
declared them lost), closes its socket, backs off (doubling, capped) and
registers again as a new incarnation, as the Paranoid Pirate worker does.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import zmq

from . import executor, protocol, shuffle
from .config import WorkerSettings, check_endpoint
from .errors import ProtocolError
from .security import MEMBER, Gatekeeper, HandshakeWatch, check_bind, load_keys

log = logging.getLogger(__name__)

#: Map outputs live in this subdirectory of --data-dir.
DATA_SUBDIR = "zmqmr-maps"
#: Before the first WELCOME, assume these (the master's reply overrides them).
DEFAULT_HEARTBEAT = 1.0
DEFAULT_TIMEOUT = 10.0


@dataclass
class Slot:
    """One executor process and the attempt it runs."""

    proc: Any
    conn: Connection
    attempt: int | None = None
    job: str | None = None
    kind: str = ""
    task: int = 0
    spec: dict[str, Any] = field(default_factory=dict)
    jobs: set[str] = field(default_factory=set)
    progress: float = 0.0


class Worker:
    def __init__(
        self,
        master: str,
        data_dir: str | None = None,
        settings: WorkerSettings | None = None,
        shuffle_bind: str | None = None,
        keys_dir: str | None = None,
        insecure: bool = False,
    ) -> None:
        check_endpoint(master, "the master's worker address")
        self.master = master
        self.settings = settings or WorkerSettings()
        self._own_data_dir = data_dir is None
        self.base_dir = os.path.abspath(data_dir or tempfile.mkdtemp(prefix="zmqmr-worker-"))
        # The worker owns this subdirectory only: whatever else is in --data-dir stays.
        self.data_dir = os.path.join(self.base_dir, DATA_SUBDIR)
        self.shuffle_bind = shuffle_bind or self._default_shuffle_bind(master)
        self.keys_dir = keys_dir
        self.keys = load_keys(keys_dir, MEMBER) if keys_dir else None
        check_bind(self.shuffle_bind, self.keys, insecure, "the worker's shuffle server")
        self.host = socket.gethostname()
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.stop_event = threading.Event()
        self.heartbeat = DEFAULT_HEARTBEAT
        self.timeout = DEFAULT_TIMEOUT
        self.code: dict[str, bytes] = {}
        self.slots: list[Slot] = []
        self.pending: list[protocol.Message] = []
        self.finished: dict[int, tuple[str, str, int, dict[str, Any]]] = {}
        self.sock: zmq.Socket[Any] | None = None
        self.watch: HandshakeWatch | None = None
        self.identity = b""
        self.welcomed = False
        self.last_heard = 0.0
        self.next_heartbeat = 0.0
        self.backoff = self.settings.reconnect_initial
        self._mp = multiprocessing.get_context("spawn")
        self.gatekeeper = Gatekeeper(self.ctx, self.keys) if self.keys else None
        self.server = shuffle.ShuffleServer(self.ctx, self.data_dir, self.shuffle_bind, self.keys)

    @staticmethod
    def _default_shuffle_bind(master: str) -> str:
        host = master.split("://", 1)[-1].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost", "[::1]"):
            return "tcp://127.0.0.1:*"
        return f"tcp://{_local_ip_towards(host)}:*"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        self._clear_data_dir()
        self.shuffle_address = self.server.start()
        for _ in range(self.settings.slots):
            self.slots.append(self._spawn())
        log.info(
            "worker %s: %d slots, shuffle at %s, data in %s",
            self.host,
            self.settings.slots,
            self.shuffle_address,
            self.data_dir,
        )

    def _clear_data_dir(self) -> None:
        """Remove map outputs a previous worker left (they belong to a dead incarnation)."""
        for entry in os.listdir(self.data_dir):
            shutil.rmtree(os.path.join(self.data_dir, entry), ignore_errors=True)

    def _spawn(self) -> Slot:
        parent, child = self._mp.Pipe()
        proc = self._mp.Process(
            target=executor.main,
            args=(
                child,
                os.getpid(),
                self.data_dir,
                self.shuffle_address,
                self.settings,
                self.keys_dir,
            ),
            name="zmqmr-executor",
            daemon=True,
        )
        proc.start()
        child.close()
        return Slot(proc, parent)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self._send(protocol.BYE, {})
            except zmq.ZMQError:
                pass
            self._close_master_socket(linger=200)
        for slot in self.slots:
            self._kill(slot)
        self.slots = []
        self.server.stop()
        if self.gatekeeper is not None:
            self.gatekeeper.stop()
        self.ctx.term()
        if self._own_data_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _kill(self, slot: Slot) -> None:
        if slot.proc.is_alive():
            os.kill(slot.proc.pid, signal.SIGKILL)
        slot.proc.join(5)
        slot.conn.close()

    # -- connection to the master ---------------------------------------------

    def _connect(self, now: float) -> None:
        self._close_master_socket()
        self.identity = f"w-{self.host}-{os.getpid()}-{uuid.uuid4().hex[:8]}".encode()
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.linger = 0
        if self.keys is not None:
            self.keys.client(sock, self.keys.master_public)
        self.watch = HandshakeWatch(sock)
        sock.connect(self.master)
        self.sock = sock
        self.welcomed = False
        self.last_heard = now
        self.next_heartbeat = now + self.heartbeat
        self._send(
            protocol.READY,
            {
                "slots": len(self.slots),
                "shuffle": self.shuffle_address,
                "host": self.host,
                "pid": os.getpid(),
            },
        )

    def _close_master_socket(self, linger: int = 0) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        if self.sock is not None:
            self.sock.close(linger=linger)
            self.sock = None

    def _send(
        self, mtype: str, header: dict[str, Any], blobs: list[bytes] | tuple[()] = ()
    ) -> None:
        assert self.sock is not None
        try:
            self.sock.send_multipart(protocol.encode(mtype, header, blobs), flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("dropping %s: the queue to the master is full", mtype)

    def _drop_attempts(self) -> None:
        """Forget every running attempt: the master has given them to others."""
        for i, slot in enumerate(self.slots):
            if slot.attempt is not None:
                self._cancel_slot(i)
        self.pending.clear()

    def _master_silent(self, now: float) -> None:
        failure = self.watch.failure() if self.watch is not None else None
        if failure:
            log.error(
                "the master at %s did not let this worker in: %s; check --keys",
                self.master,
                failure,
            )
        log.warning(
            "master silent for %.1fs; reconnecting in %.1fs", now - self.last_heard, self.backoff
        )
        self._drop_attempts()
        self._close_master_socket()
        if self.stop_event.wait(self.backoff):
            return
        self.backoff = min(self.backoff * 2, self.settings.reconnect_max)
        self._connect(time.monotonic())

    # -- the loop ------------------------------------------------------------------

    def run(self) -> None:
        self.start()
        try:
            self._connect(time.monotonic())
            while not self.stop_event.is_set():
                self._step()
        finally:
            self.close()

    def _step(self) -> None:
        assert self.sock is not None
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        fds: dict[int, tuple[str, int]] = {}
        for i, slot in enumerate(self.slots):
            fds[slot.conn.fileno()] = ("conn", i)
            fds[slot.proc.sentinel] = ("exit", i)
            poller.register(slot.conn.fileno(), zmq.POLLIN)
            poller.register(slot.proc.sentinel, zmq.POLLIN)
        wait = max(0.0, min(self.next_heartbeat - time.monotonic(), self.heartbeat))
        events = dict(poller.poll(int(wait * 1000) + 1))
        now = time.monotonic()
        if self.sock in events:
            self._read_master(now)
        for fd, (what, i) in fds.items():
            if fd in events and i < len(self.slots):
                if what == "conn":
                    self._read_executor(i)
                elif not self.slots[i].proc.is_alive():
                    self._executor_died(i)
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.heartbeat
            progress = [[s.attempt, s.progress] for s in self.slots if s.attempt is not None]
            self._send(protocol.HEARTBEAT, {"progress": progress})
        if now - self.last_heard > self.timeout:
            self._master_silent(now)

    def _read_master(self, now: float) -> None:
        assert self.sock is not None
        while True:
            try:
                frames = self.sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = protocol.decode(frames)
            except ProtocolError as exc:
                log.warning("dropping a malformed message from the master: %s", exc)
                continue
            self.last_heard = now
            self._on_master(msg, now)
            if self.sock is None:
                return

    def _on_master(self, msg: protocol.Message, now: float) -> None:
        t = msg.type
        if t == protocol.WELCOME:
            self.welcomed = True
            self.backoff = self.settings.reconnect_initial
            self.heartbeat = float(msg["heartbeat_interval"])
            self.timeout = float(msg["worker_timeout"])
        elif t == protocol.HEARTBEAT:
            pass
        elif t == protocol.ASSIGN:
            self._on_assign(msg)
        elif t == protocol.CANCEL:
            self._on_cancel(msg["attempt"])
        elif t == protocol.RELOCATE:
            for slot in self.slots:
                if slot.attempt == msg["attempt"]:
                    slot.conn.send(("relocate", msg["map_task"], msg["location"]))
        elif t == protocol.DROP_JOB:
            self._drop_job(msg["job"])
        elif t == protocol.RECONNECT:
            log.info("the master asks this worker to register again")
            self._drop_attempts()
            self._connect(now)
        else:
            log.warning("unexpected %s from the master", t)

    def _on_assign(self, msg: protocol.Message) -> None:
        blobs = list(msg.blobs)
        if msg["has_code"]:
            if not blobs:
                raise ProtocolError("ASSIGN says it has code but carries no blob")
            self.code[msg["job"]] = blobs.pop(0)
        for i, slot in enumerate(self.slots):
            if slot.attempt is None:
                self._start(i, msg, blobs[0] if msg["has_records"] and blobs else None)
                return
        self.pending.append(msg)

    def _start(self, i: int, msg: protocol.Message, records: bytes | None) -> None:
        slot = self.slots[i]
        job = msg["job"]
        attempt = msg["attempt"]
        if job not in self.code:
            self._send(
                protocol.FAILED,
                {
                    "attempt": attempt,
                    "kind": "lost",
                    "error": protocol.error_dict("MissingCode", "this worker lost the job's code"),
                },
            )
            return
        code = None if job in slot.jobs else self.code[job]
        slot.attempt, slot.job, slot.kind, slot.task = attempt, job, msg["kind"], msg["task"]
        slot.spec, slot.progress = msg["spec"], 0.0
        slot.jobs.add(job)
        slot.conn.send(("run", attempt, job, msg["kind"], msg["task"], msg["spec"], code, records))

    def _start_pending(self) -> None:
        while self.pending:
            free = [i for i, s in enumerate(self.slots) if s.attempt is None]
            if not free:
                return
            msg = self.pending.pop(0)
            self._start(free[0], msg, msg.blobs[-1] if msg["has_records"] else None)

    def _attempt_paths(
        self, job: str, kind: str, task: int, attempt: int, spec: dict[str, Any]
    ) -> list[str]:
        return executor.attempt_paths(
            self.data_dir, job, kind, task, attempt, spec.get("output_dir")
        )

    def _cancel_slot(self, i: int) -> None:
        slot = self.slots[i]
        assert slot.job is not None and slot.attempt is not None
        paths = self._attempt_paths(slot.job, slot.kind, slot.task, slot.attempt, slot.spec)
        self._kill(slot)
        executor.remove_paths(paths)
        self.slots[i] = self._spawn()

    def _on_cancel(self, attempt: int) -> None:
        for i, slot in enumerate(self.slots):
            if slot.attempt == attempt:
                self._cancel_slot(i)
                self._start_pending()
                return
        self.pending = [m for m in self.pending if m["attempt"] != attempt]
        done = self.finished.pop(attempt, None)
        if done is not None:  # a finished attempt that lost: remove its output
            executor.remove_paths(self._attempt_paths(done[0], done[1], done[2], attempt, done[3]))

    def _drop_job(self, job: str) -> None:
        self.code.pop(job, None)
        for slot in self.slots:
            if job in slot.jobs:
                slot.jobs.discard(job)
                if slot.proc.is_alive():
                    slot.conn.send(("forget", job))
        self.finished = {a: f for a, f in self.finished.items() if f[0] != job}
        shutil.rmtree(shuffle.job_dir(self.data_dir, job), ignore_errors=True)

    # -- executors -----------------------------------------------------------------

    def _read_executor(self, i: int) -> None:
        slot = self.slots[i]
        while slot.conn.poll():
            try:
                msg = slot.conn.recv()
            except (EOFError, OSError):
                self._executor_died(i)
                return
            kind = msg[0]
            if kind == "progress":
                if msg[1] == slot.attempt:
                    slot.progress = float(msg[2])
                continue
            if msg[1] != slot.attempt:
                continue
            if kind == "fetch_failed":
                _, attempt, map_task, map_attempt, reason = msg
                self._send(
                    protocol.FETCH_FAILED,
                    {
                        "attempt": attempt,
                        "map_task": map_task,
                        "map_attempt": map_attempt,
                        "reason": reason,
                    },
                )
                continue
            if kind == "done":
                _, attempt, info, result = msg
                assert slot.job is not None
                self.finished[attempt] = (slot.job, slot.kind, slot.task, slot.spec)
                self._send(
                    protocol.DONE,
                    {"attempt": attempt, "info": info},
                    [result] if result is not None else [],
                )
            elif kind == "failed":
                _, attempt, fkind, error, record = msg
                header = {"attempt": attempt, "kind": fkind, "error": error}
                if record is not None:
                    header["record"] = record
                self._send(protocol.FAILED, header)
            slot.attempt = None
            self._start_pending()

    def _executor_died(self, i: int) -> None:
        slot = self.slots[i]
        slot.proc.join(1)
        code = slot.proc.exitcode
        how = (
            f"signal {-code} ({signal.Signals(-code).name})"
            if code and code < 0
            else f"exit code {code}"
        )
        if slot.attempt is not None:
            log.warning("executor for attempt %s died with %s", slot.attempt, how)
            self._send(
                protocol.FAILED,
                {
                    "attempt": slot.attempt,
                    "kind": "crash",
                    "error": protocol.error_dict(
                        "ExecutorDied",
                        f"the executor running {slot.kind} task {slot.task} died with {how}",
                    ),
                },
            )
            assert slot.job is not None
            executor.remove_paths(
                self._attempt_paths(slot.job, slot.kind, slot.task, slot.attempt, slot.spec)
            )
        slot.conn.close()
        self.slots[i] = self._spawn()
        self._start_pending()


def _local_ip_towards(host: str) -> str:
    """The address of this machine on the route to ``host`` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"
