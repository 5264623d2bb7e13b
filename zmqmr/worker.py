"""The worker: a DEALER to the master, executor processes, and a shuffle server.

This is the shell around ``WorkerState`` (worker_state.py), which decides what
the worker does: it reads the master's socket, the executors' pipes and their
exits, hands each as an event to the state with the clock, and carries out
the commands that come back (send, run on a slot, restart a slot, remove
files, reconnect). The worker never runs user code itself: each slot is an
executor process, reused across attempts, killed when its attempt is
cancelled. The first executors are forked from the worker while it holds no
ZeroMQ context and no thread yet, when its own ``hash()`` is the executors'
(it runs under ``PYTHONHASHSEED=0``, as ``LocalCluster`` starts it): they
start with the worker's imports instead of a new interpreter's, and learn the
shuffle server's address through their pipe once it is bound. Otherwise, and
on every restart, executors are started with ``spawn``. Map outputs are served
from a REP socket in the shuffle server's own thread.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import shutil
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import zmq

from . import executor, layout, partitioning, profiling, protocol, shuffle, tasklogs, worker_state
from .config import WorkerSettings, check_endpoint
from .errors import ProtocolError
from .security import MEMBER, Gatekeeper, HandshakeWatch, check_bind, load_keys
from .wakeup import StopEvent
from .worker_state import WorkerState

log = logging.getLogger(__name__)

#: Map outputs live in this subdirectory of --data-dir.
DATA_SUBDIR = "zmqmr-maps"
#: Before the first WELCOME, assume these (the master's reply overrides them).
DEFAULT_HEARTBEAT = 1.0
DEFAULT_TIMEOUT = 10.0


FROM_EXECUTOR = (protocol.AttemptProgress, protocol.Done, protocol.Failed, protocol.FetchFailed)


@dataclass
class Executor:
    """One slot's executor process and the worker's end of its pipe."""

    proc: Any
    conn: Connection
    #: The pipe alone, to ask whether more is waiting without building a selector
    #: (``Connection.poll`` builds one per call: about as much CPU as a small attempt's
    #: message costs to handle).
    readable: Any = None

    def __post_init__(self) -> None:
        self.readable = select.poll()
        self.readable.register(self.conn.fileno(), select.POLLIN)

    def more(self) -> bool:
        """True if the pipe holds more to read (or is closed: recv then says so)."""
        return bool(self.readable.poll(0))


def _forked_main(others: list[Connection], *args: Any) -> None:
    """``executor.main`` in a forked executor, which first closes its copies of the
    worker's ends of the other slots' pipes (so those executors see the worker's
    close), and drops the worker's log handlers (a spawned executor has none)."""
    for conn in others:
        conn.close()
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    executor.main(*args)


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
        self._owner_lock: int | None = None  # held while this worker owns a temp dir
        if data_dir is None:
            layout.sweep_temp_dirs()  # those of workers killed before they could
            data_dir, self._owner_lock = layout.make_temp_dir()
        self.base_dir = os.path.abspath(data_dir)
        # The worker owns this subdirectory only: whatever else is in --data-dir stays.
        self.data_dir = os.path.join(self.base_dir, DATA_SUBDIR)
        self.shuffle_bind = shuffle_bind or self._default_shuffle_bind(master)
        self.keys_dir = keys_dir
        self.keys = load_keys(keys_dir, MEMBER) if keys_dir else None
        check_bind(self.shuffle_bind, self.keys, insecure, "the worker's shuffle server")
        self.host = socket.gethostname()
        self.shuffle_address = ""
        self._mp = multiprocessing.get_context("spawn")
        self.slots: list[Executor] = []
        # Forked before this process holds a ZeroMQ context or a thread (never after).
        if partitioning.seed_is_fixed() and threading.active_count() == 1:
            self._prepare_data_dir()
            fork = multiprocessing.get_context("fork")
            self.slots = [self._spawn(i, fork) for i in range(self.settings.slots)]
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.stop_event = StopEvent()  # set: the poll in _step wakes at once
        self.state: WorkerState | None = None
        self.sock: zmq.Socket[Any] | None = None
        self.watch: HandshakeWatch | None = None
        self.identity = b""
        self._reconnect_at: float | None = None
        self._refused = False  # the refusal is logged once per connection
        #: Messages for the master from this loop step: sent together at its end (a BATCH).
        self._outgoing: list[protocol.Message] = []
        self._topology = 0  # counts changes of the socket or an executor
        self._poll_key = -1
        self._poller = zmq.Poller()
        self._fds: dict[int, tuple[str, int]] = {}
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
        if not self.slots:
            self._prepare_data_dir()
        self.shuffle_address = self.server.start()
        for ex in self.slots:  # forked: they wait for the address
            try:
                ex.conn.send(self.shuffle_address)
            except OSError:
                pass  # it died: the run loop sees its exit and restarts the slot
        for i in range(len(self.slots), self.settings.slots):
            self.slots.append(self._spawn(i))
        s = self.settings
        self.state = WorkerState(
            len(self.slots),
            self.shuffle_address,
            self.host,
            os.getpid(),
            s.reconnect_initial,
            s.reconnect_max,
            DEFAULT_HEARTBEAT,
            DEFAULT_TIMEOUT,
        )
        log.info(
            "worker %s: %d slots, shuffle at %s, data in %s",
            self.host,
            self.settings.slots,
            self.shuffle_address,
            self.data_dir,
        )

    def _prepare_data_dir(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        self._clear_data_dir()

    def _clear_data_dir(self) -> None:
        """Remove map outputs a previous worker left (they belong to a dead incarnation)."""
        for entry in os.listdir(self.data_dir):
            shutil.rmtree(os.path.join(self.data_dir, entry), ignore_errors=True)

    def _spawn(self, slot: int, fork: Any = None) -> Executor:
        """Start slot's executor: with ``spawn``, or from ``fork`` (the fork context)
        in ``__init__``, before the shuffle server's address is known."""
        position = layout.position_path(self.data_dir, slot)
        with open(position, "wb") as f:  # a fresh executor has no position yet
            f.write(executor.POSITION.pack(-1, -1))
        mp = fork or self._mp
        parent, child = mp.Pipe()
        address = None if fork else self.shuffle_address  # a forked one reads it from its pipe
        args: tuple[Any, ...] = (child, os.getpid(), self.data_dir, address)
        args += (self.settings, self.keys_dir, position)
        target: Any = executor.main
        if fork:  # it closes its copies of the other slots' pipes first
            target, args = _forked_main, ([ex.conn for ex in self.slots], *args)
        proc = mp.Process(target=target, args=args, name="zmqmr-executor", daemon=True)
        os.environ["PYTHONHASHSEED"] = "0"  # every executor hashes keys alike: zmqmr.partitioning
        proc.start()
        child.close()
        return Executor(proc, parent)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self._send(protocol.Bye())
            except zmq.ZMQError:
                pass
            self._close_master_socket(linger=200)
        for ex in self.slots:
            self._kill(ex)
        self.slots = []
        self.server.stop()
        if self.gatekeeper is not None:
            self.gatekeeper.stop()
        self.ctx.term()
        if self._own_data_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self._owner_lock is not None:
            os.close(self._owner_lock)
            self._owner_lock = None
        self.stop_event.close()

    def _kill(self, ex: Executor) -> None:
        if ex.proc.is_alive():
            os.kill(ex.proc.pid, signal.SIGKILL)
        ex.proc.join(5)
        ex.conn.close()

    # -- connection to the master ---------------------------------------------

    def _connect(self) -> None:
        self._close_master_socket()
        self.identity = f"w-{self.host}-{os.getpid()}-{uuid.uuid4().hex[:8]}".encode()
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.linger = 0
        if self.keys is not None:
            self.keys.client(sock, self.keys.master_public)
        self.watch = HandshakeWatch(sock)
        self._refused = False
        sock.connect(self.master)
        self.sock = sock
        self._topology += 1
        held = [protocol.HeldOutput(*h) for h in layout.held_outputs(self.data_dir)]
        self._handle(worker_state.Connected(held))

    def _close_master_socket(self, linger: int = 0) -> None:
        self._flush_sends()
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        if self.sock is not None:
            self.sock.close(linger=linger)
            self.sock = None

    def _send(self, msg: protocol.Message) -> None:
        """Send ``msg`` to the master at the end of this loop step, with the step's others."""
        if self.sock is not None:  # else between connections: the master hears after READY
            self._outgoing.append(msg)

    def _flush_sends(self) -> None:
        msgs, self._outgoing = self._outgoing, []
        if self.sock is None or not msgs:
            return
        try:
            packed = protocol.pack(msgs)
        except ProtocolError as exc:  # a message that does not encode: a bug here, logged
            log.error("could not encode a message for the master: %s", exc)
            return
        try:
            for frames in packed:
                protocol.send_frames(self.sock, frames, int(zmq.NOBLOCK))
        except zmq.Again:
            if self._refusal() is None:
                log.warning("dropping %d messages: the queue to the master is full", len(msgs))

    def _refusal(self) -> str | None:
        """Why the master refused this connection's handshake, if it did; logged once."""
        failure = self.watch.failure() if self.watch is not None else None
        if failure is not None and not self._refused:
            self._refused = True
            log.error(
                "the master at %s did not let this worker in: %s; check --keys",
                self.master,
                failure,
            )
        return failure

    # -- the loop ------------------------------------------------------------------

    def run(self) -> None:
        profile = profiling.Profile("worker")
        profile.start()
        self.start()
        try:
            self._connect()
            while not self.stop_event.is_set():
                self._step()
        finally:
            self.close()
            profile.dump()

    def _step(self) -> None:
        assert self.state is not None
        now = time.monotonic()
        if self._reconnect_at is not None:
            if now < self._reconnect_at:
                self.stop_event.wait(min(self._reconnect_at - now, 0.5))
                return
            self._reconnect_at = None
            self._connect()
        assert self.sock is not None
        # The poller changes only with the socket or an executor: rebuilt then, not per step.
        if self._poll_key != self._topology:
            self._poll_key = self._topology
            self._poller = zmq.Poller()
            self._poller.register(self.sock, zmq.POLLIN)
            self._poller.register(self.stop_event.fileno(), zmq.POLLIN)
            if self.watch is not None:  # a refused handshake is told as it happens
                self._poller.register(self.watch.monitor, zmq.POLLIN)
            self._fds = {}
            for i, ex in enumerate(self.slots):
                self._fds[ex.conn.fileno()] = ("conn", i)
                self._fds[ex.proc.sentinel] = ("exit", i)
                self._poller.register(ex.conn.fileno(), zmq.POLLIN)
                self._poller.register(ex.proc.sentinel, zmq.POLLIN)
        poller, fds = self._poller, self._fds
        wake = self.state.wake_at()
        wait = 1.0 if wake is None else max(0.0, min(wake - now, 1.0))
        self._flush_sends()  # a READY from a new connection goes before the wait
        events = dict(poller.poll(int(wait * 1000) + 1))
        if self.sock in events:
            self._read_master()
        if self.watch is not None and self.watch.monitor in events:
            self._refusal()
        for fd, (what, i) in fds.items():
            if fd in events and i < len(self.slots):
                if what == "conn":
                    self._read_executor(i)
                elif not self.slots[i].proc.is_alive():
                    self._executor_died(i)
        self._handle(worker_state.Clock())
        self._flush_sends()

    def _read_master(self) -> None:
        while self.sock is not None:
            try:
                frames = protocol.recv_frames(self.sock, int(zmq.NOBLOCK))
            except zmq.Again:
                return
            try:
                batch = protocol.decode_batch(frames)
            except ProtocolError as exc:
                log.warning("dropping a malformed message from the master: %s", exc)
                continue
            for problem in batch.errors:
                log.warning("dropping a malformed message from the master: %s", problem)
            if batch.parts:
                self._handle(worker_state.FromMaster(batch))

    def _read_executor(self, i: int) -> None:
        ex = self.slots[i]
        while ex.more():
            try:
                msg = ex.conn.recv()
            except (EOFError, OSError):
                self._executor_died(i)
                return
            except Exception as exc:  # what it sent does not unpickle: it is not trusted on
                log.error("an executor sent what does not unpickle: %r", exc)
                if ex.proc.is_alive():
                    os.kill(ex.proc.pid, signal.SIGKILL)
                self._executor_died(i)
                return
            if isinstance(msg, FROM_EXECUTOR):
                self._handle(worker_state.FromExecutor(i, msg))
            else:
                log.warning("unexpected %s from an executor", type(msg).__name__)
            if self.slots[i] is not ex:
                return  # restarted while handling

    def _executor_died(self, i: int) -> None:
        ex = self.slots[i]
        ex.proc.join(1)
        code = ex.proc.exitcode
        how = (
            f"signal {-code} ({signal.Signals(-code).name})"
            if code and code < 0
            else f"exit code {code}"
        )
        log.warning("an executor died with %s", how)
        self._handle(worker_state.ExecutorExited(i, how, self._position(i)))

    def _position(self, i: int) -> tuple[int, int] | None:
        """What the dead executor of slot ``i`` left: (attempt, record being mapped)."""
        try:
            with open(layout.position_path(self.data_dir, i), "rb") as f:
                data = f.read(executor.POSITION.size)
        except OSError:
            return None
        if len(data) != executor.POSITION.size:
            return None
        attempt, record = executor.POSITION.unpack(data)
        return (attempt, record) if attempt >= 0 else None

    # -- carrying out the state's commands -----------------------------------------

    def _handle(self, event: worker_state.WorkerEvent) -> None:
        assert self.state is not None
        for cmd in self.state.handle(event, time.monotonic()):
            match cmd:
                case worker_state.Send():
                    self._send(cmd.msg)
                case worker_state.Run():
                    self.slots[cmd.slot].conn.send(cmd.attempt)
                case worker_state.Forward():
                    ex = self.slots[cmd.slot]
                    if ex.proc.is_alive():
                        ex.conn.send(cmd.msg)
                case worker_state.RestartSlot():
                    self._kill(self.slots[cmd.slot])
                    self.slots[cmd.slot] = self._spawn(cmd.slot)
                    self._topology += 1
                case worker_state.RemoveAttemptFiles():
                    layout.remove_paths(
                        layout.attempt_paths(
                            self.data_dir, cmd.job, cmd.kind, cmd.task, cmd.attempt, cmd.output_dir
                        )
                    )
                    if cmd.kind == "map":  # or its entry in a pack
                        self.server.remove_packed(cmd.job, cmd.task, cmd.attempt)
                case worker_state.RemoveJobFiles():
                    self.server.forget_job(cmd.job)
                    shutil.rmtree(layout.job_dir(self.data_dir, cmd.job), ignore_errors=True)
                    tasklogs.prune(tasklogs.logs_root(self.data_dir))  # a job's logs outlive it
                case worker_state.SendLogs():
                    root = tasklogs.logs_root(self.data_dir)
                    logs, more = tasklogs.read_logs(root, cmd.job, cmd.kind, cmd.task)
                    self._send(protocol.Logs(cmd.request, cmd.job, logs, more))
                case worker_state.Reconnect():
                    self._refusal()
                    log.warning("%s; registering again in %.1fs", cmd.reason, cmd.delay)
                    self._close_master_socket()
                    self._reconnect_at = time.monotonic() + cmd.delay


def _local_ip_towards(host: str) -> str:
    """The address of this machine on the route to ``host`` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"
