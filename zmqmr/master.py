"""The master: two ROUTER sockets and one poll loop around ``MasterState``.

The loop reads frames, turns each valid message into an event for the state,
and turns the commands that come back into messages. It reads the clock
(``time.monotonic``) and hands it in; it decides nothing itself. It never
unpickles anything: job code, records and results stay opaque bytes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import zmq

from . import protocol, state
from .config import DEFAULT_CLIENT_BIND, DEFAULT_WORKER_BIND, ClusterSettings
from .errors import ProtocolError
from .security import Gatekeeper, Keys, check_bind

log = logging.getLogger(__name__)

#: Sockets refuse messages larger than this before they reach the loop.
MAX_MESSAGE_BYTES = 2 * 1024 * 1024 * 1024 - 1


class Master:
    def __init__(
        self,
        worker_bind: str = DEFAULT_WORKER_BIND,
        client_bind: str = DEFAULT_CLIENT_BIND,
        settings: ClusterSettings | None = None,
        keys: Keys | None = None,
        insecure: bool = False,
    ) -> None:
        check_bind(worker_bind, keys, insecure, "the master's worker port")
        check_bind(client_bind, keys, insecure, "the master's client port")
        self.settings = settings or ClusterSettings()
        self.state = state.MasterState(self.settings)
        self.keys = keys
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.gatekeeper = Gatekeeper(self.ctx, keys) if keys else None
        self.workers = self._router(worker_bind)
        self.clients = self._router(client_bind)
        self.worker_address = self.workers.getsockopt_string(zmq.LAST_ENDPOINT)
        self.client_address = self.clients.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stop_event = threading.Event()
        self.dropped = 0

    def _router(self, bind: str) -> zmq.Socket[Any]:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.linger = 0
        if self.keys is not None:
            self.keys.server(sock)
        sock.bind(bind)
        return sock

    def close(self, linger: int = 0) -> None:
        self.workers.close(linger)
        self.clients.close(linger)
        if self.gatekeeper is not None:
            self.gatekeeper.stop()
        self.ctx.term()

    def run(self) -> None:
        """Serve until ``stop_event`` is set."""
        poller = zmq.Poller()
        poller.register(self.workers, zmq.POLLIN)
        poller.register(self.clients, zmq.POLLIN)
        interval = self.settings.heartbeat_interval
        next_beat = time.monotonic()
        try:
            while not self.stop_event.is_set():
                wake = self.state.wake_at()  # a long poll falling due
                due = next_beat if wake is None else min(next_beat, wake)
                wait = max(0.0, min(due - time.monotonic(), 0.25))
                events = dict(poller.poll(int(wait * 1000) + 1))
                if self.workers in events:
                    self._drain(self.workers, self._worker_event)
                if self.clients in events:
                    self._drain(self.clients, self._client_event)
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + interval
                    self._execute(self.state.handle(state.Tick(), now))
                    for wid in list(self.state.workers):
                        self._send(self.workers, wid, protocol.HEARTBEAT, {"progress": []})
                elif wake is not None and now >= wake:
                    self._execute(self.state.handle(state.Tick(), now))
            self._execute(self.state.handle(state.Shutdown(), time.monotonic()))
            self.close(linger=500)  # let the goodbyes out
        except BaseException:
            self.close()
            raise

    def _drain(self, sock: zmq.Socket[Any], to_event: Any) -> None:
        for _ in range(1000):  # bounded, so one busy socket cannot starve the other
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            try:
                identity, msg = protocol.split_routed(frames)
                event = to_event(identity, msg)
            except ProtocolError as exc:
                self.dropped += 1
                log.warning("dropping a malformed message: %s", exc)
                continue
            if event is not None:
                self._execute(self.state.handle(event, time.monotonic()))

    @staticmethod
    def _worker_event(wid: bytes, msg: protocol.Message) -> object | None:
        t = msg.type
        if t == protocol.READY:
            return state.WorkerReady(wid, msg["slots"], msg["shuffle"], msg["host"], msg["pid"])
        if t == protocol.HEARTBEAT:
            progress = []
            for item in msg["progress"]:
                if (
                    not isinstance(item, list)
                    or len(item) != 2
                    or not isinstance(item[0], int)
                    or not isinstance(item[1], (int, float))
                ):
                    raise ProtocolError("HEARTBEAT: progress must be [attempt, fraction] pairs")
                progress.append((item[0], float(item[1])))
            return state.WorkerSeen(wid, progress)
        if t == protocol.DONE:
            return state.AttemptDone(
                wid, msg["attempt"], msg["info"], msg.blobs[0] if msg.blobs else None
            )
        if t == protocol.FAILED:
            record = msg.header.get("record")
            if record is not None and (not isinstance(record, int) or record < 0):
                raise ProtocolError("FAILED: record must be a non-negative int")
            return state.AttemptFailed(
                wid, msg["attempt"], msg["kind"], protocol.check_error(msg["error"]), record
            )
        if t == protocol.FETCH_FAILED:
            return state.FetchFailed(
                wid, msg["attempt"], msg["map_task"], msg["map_attempt"], msg["reason"]
            )
        if t == protocol.BYE:
            return state.WorkerLeft(wid)
        raise ProtocolError(f"{t} is not a worker's message")

    @staticmethod
    def _client_event(cid: bytes, msg: protocol.Message) -> object | None:
        t = msg.type
        if t == protocol.SUBMIT:
            return state.JobSubmitted(cid, msg["job"], msg["spec"], msg.blobs[0], msg.blobs[1:])
        if t == protocol.POLL:
            return state.PollJob(cid, msg["job"], float(msg.header.get("wait", 0)))
        if t == protocol.CANCEL_JOB:
            return state.CancelJob(cid, msg["job"])
        if t == protocol.STATUS:
            return state.StatusRequest(cid)
        raise ProtocolError(f"{t} is not a client's message")

    def _send(
        self,
        sock: zmq.Socket[Any],
        peer: bytes,
        mtype: str,
        header: dict[str, Any],
        blobs: list[bytes] | tuple[()] = (),
    ) -> None:
        try:
            sock.send_multipart(
                protocol.routed(peer, protocol.encode(mtype, header, blobs)),
                flags=zmq.NOBLOCK,
                copy=False,
            )
        except zmq.ZMQError as exc:  # EHOSTUNREACH (gone) or EAGAIN (queue full)
            log.debug("could not send %s to %r: %s", mtype, peer, exc)

    def _execute(self, commands: list[object]) -> None:
        w, c = self.workers, self.clients
        for cmd in commands:
            if isinstance(cmd, state.Assign):
                blobs = [b for b in (cmd.code, cmd.records) if b is not None]
                self._send(
                    w,
                    cmd.worker,
                    protocol.ASSIGN,
                    {
                        "attempt": cmd.attempt,
                        "job": cmd.job_id,
                        "kind": cmd.kind,
                        "task": cmd.task,
                        "spec": cmd.spec,
                        "has_code": cmd.code is not None,
                        "has_records": cmd.records is not None,
                    },
                    blobs,
                )
            elif isinstance(cmd, state.Cancel):
                self._send(w, cmd.worker, protocol.CANCEL, {"attempt": cmd.attempt})
            elif isinstance(cmd, state.Relocate):
                self._send(
                    w,
                    cmd.worker,
                    protocol.RELOCATE,
                    {"attempt": cmd.attempt, "map_task": cmd.map_task, "location": cmd.location},
                )
            elif isinstance(cmd, state.DropJob):
                self._send(w, cmd.worker, protocol.DROP_JOB, {"job": cmd.job_id})
            elif isinstance(cmd, state.Welcome):
                self._send(
                    w,
                    cmd.worker,
                    protocol.WELCOME,
                    {
                        "heartbeat_interval": self.settings.heartbeat_interval,
                        "worker_timeout": self.settings.worker_timeout,
                    },
                )
            elif isinstance(cmd, state.Reregister):
                self._send(w, cmd.worker, protocol.RECONNECT, {})
            elif isinstance(cmd, state.JobAccepted):
                self._send(c, cmd.client, protocol.ACCEPTED, {"job": cmd.job_id})
            elif isinstance(cmd, state.JobRejected):
                self._send(
                    c, cmd.client, protocol.REJECTED, {"job": cmd.job_id, "error": cmd.error}
                )
            elif isinstance(cmd, state.SendProgress):
                self._send(
                    c, cmd.client, protocol.PROGRESS, {"job": cmd.job_id, "progress": cmd.progress}
                )
            elif isinstance(cmd, state.SendResult):
                self._send(
                    c,
                    cmd.client,
                    protocol.RESULT,
                    {"job": cmd.job_id, "summary": cmd.summary},
                    cmd.blobs,
                )
            elif isinstance(cmd, state.SendJobFailed):
                self._send(
                    c, cmd.client, protocol.JOB_FAILED, {"job": cmd.job_id, "error": cmd.error}
                )
            elif isinstance(cmd, state.SendStatus):
                self._send(c, cmd.client, protocol.STATUS_REPLY, {"status": cmd.status})
            else:  # pragma: no cover - a command the shell does not know is a bug
                raise TypeError(f"unknown command {cmd!r}")
