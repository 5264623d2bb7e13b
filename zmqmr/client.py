"""Client, JobHandle and the progress line.

A client talks to the master's client port with a DEALER socket: SUBMIT, then
POLL until the job ends. Polls are long: the master holds each answer until the
job ends or a couple of seconds pass, so the end is seen at once. Every request
waits at most ``timeout`` seconds for an answer; silence raises
``MasterUnavailable`` instead of hanging, and the socket is closed and reopened
(Lazy Pirate) so a late reply cannot confuse the next request.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable
from typing import IO, Any

import zmq

from . import protocol, shuffle
from .config import check_endpoint
from .errors import (
    ClusterError,
    JobCancelled,
    JobFailed,
    JobSubmitError,
    MasterUnavailable,
    ResultTooLarge,
)
from .job import Job, JobResult, prepare, remove_temp_parts
from .security import MEMBER, HandshakeWatch, key_dir, load_keys

log = logging.getLogger(__name__)

#: Longest a waiting client's long poll asks the master to hold its answer (seconds),
#: and how often the progress line is redrawn.
LONG_POLL = 2.0
PROGRESS_EVERY = 0.5


class Client:
    """A connection to a master's client port.

    CURVE is on by default: ``keys`` names a key directory (see ``zmqmr
    keygen``), else the default one (``$ZMQMR_KEYS`` or ``~/.zmqmr/keys``,
    made on first use) is used; ``insecure=True`` without ``keys`` turns
    CURVE off, for a master started with ``--insecure``. ``timeout`` bounds
    every wait for the master's answer, in seconds.
    """

    def __init__(
        self,
        address: str,
        keys: str | None = None,
        timeout: float = 10.0,
        insecure: bool = False,
    ) -> None:
        check_endpoint(address, "the master's client address")
        self.address = address
        directory = key_dir(keys, insecure, "a client")
        self.keys = load_keys(directory, MEMBER) if directory else None
        self.timeout = timeout
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock: zmq.Socket[Any] | None = None
        self._watch: HandshakeWatch | None = None

    def _socket(self) -> zmq.Socket[Any]:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.setsockopt(zmq.IDENTITY, f"c-{uuid.uuid4().hex}".encode())
            if self.keys is not None:
                self.keys.client(sock, self.keys.master_public)
            self._watch = HandshakeWatch(sock)
            sock.connect(self.address)
            self._sock = sock
        return self._sock

    def _close_socket(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def close(self) -> None:
        self._close_socket()
        self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        mtype: str,
        header: dict[str, Any],
        blobs: list[bytes] | tuple[()] = (),
        answers: tuple[str, ...] = (),
        job: str | None = None,
    ) -> protocol.Message:
        """Send one request and wait for its answer (of a type in ``answers``)."""
        sock = self._socket()
        sock.send_multipart(protocol.encode(mtype, header, blobs), copy=False)
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1):
                failure = self._watch.failure() if self._watch else None
                self._close_socket()
                if failure:
                    raise MasterUnavailable(
                        f"the master at {self.address} did not let this client in: {failure}; "
                        "check --keys / Client(keys=...)"
                    )
                raise MasterUnavailable(
                    f"no answer from the master at {self.address} within {self.timeout:g}s"
                )
            try:
                msg = protocol.decode(sock.recv_multipart())
            except protocol.ProtocolError as exc:
                log.warning("dropping a malformed reply: %s", exc)
                continue
            if msg.type in answers and (job is None or msg.header.get("job") == job):
                return msg
            log.debug("ignoring a stale %s", msg.type)

    def submit(self, job: Job) -> JobHandle:
        """Send ``job`` to the master; returns at once with a handle."""
        prepared = prepare(job)
        job_id = uuid.uuid4().hex[:16]
        reply = self.request(
            protocol.SUBMIT,
            {"job": job_id, "spec": prepared.spec},
            [prepared.code, *prepared.records],
            answers=(protocol.ACCEPTED, protocol.REJECTED),
            job=job_id,
        )
        if reply.type == protocol.REJECTED:
            raise JobSubmitError(reply["error"].get("message", "rejected"))
        spec = prepared.spec
        return JobHandle(self, job_id, spec["name"], spec["num_reducers"], spec["output_dir"])

    def run(self, job: Job, progress: bool | None = None) -> JobResult:
        """Run ``job`` and wait for it; a progress line shows on a TTY.

        Raises ``JobFailed`` (with the user's traceback) when a task fails
        ``max_attempts`` times, ``MasterUnavailable`` when the master goes silent.
        """
        return self.submit(job).wait(progress=progress)

    def cancel(self, job_id: str) -> str | None:
        """Ask the master to stop job ``job_id``; returns the job's state once it has.

        A status request follows the cancel on the same connection, so its
        answer comes after the master has acted on the cancel. None: the
        master does not know the job (any more).
        """
        self._socket().send_multipart(protocol.encode(protocol.CANCEL_JOB, {"job": job_id}))
        states = {j["id"]: j["state"] for j in self.status()["jobs"]}
        return states.get(job_id)

    def status(self) -> dict[str, Any]:
        """Workers (slots, last heartbeat) and jobs (task counts) as the master sees them."""
        reply = self.request(protocol.STATUS, {}, answers=(protocol.STATUS_REPLY,))
        status: dict[str, Any] = reply["status"]
        return status


def _error(error: dict[str, Any]) -> Exception:
    kind = error.get("type", "")
    message = error.get("message", "job failed")
    if kind == "JobSubmitError":
        return JobSubmitError(message)
    if kind == "JobCancelled":
        return JobCancelled(message)
    if kind == "ResultTooLarge":
        return ResultTooLarge(message)
    if kind in ("UnknownJob", "MasterShutdown"):
        return ClusterError(message)
    return JobFailed(
        message,
        remote_type=kind,
        remote_message=error.get("user_message", message),
        remote_traceback=error.get("traceback", ""),
        task=error.get("task", ""),
    )


class JobHandle:
    """A submitted job: ``wait``, ``progress``, ``cancel``."""

    def __init__(
        self,
        client: Client,
        job_id: str,
        name: str,
        num_reducers: int,
        output_dir: str | None = None,
    ) -> None:
        self.client = client
        self.output_dir = output_dir
        self.job_id = job_id
        self.name = name
        self.num_reducers = num_reducers
        self._outcome: protocol.Message | None = None
        self._last: dict[str, Any] = {}

    def _poll(self, wait: float = 0.0) -> protocol.Message:
        if self._outcome is not None:
            return self._outcome
        header: dict[str, Any] = {"job": self.job_id}
        if wait > 0:
            header["wait"] = wait
        msg = self.client.request(
            protocol.POLL,
            header,
            answers=(protocol.PROGRESS, protocol.RESULT, protocol.JOB_FAILED),
            job=self.job_id,
        )
        if msg.type == protocol.PROGRESS:
            self._last = msg["progress"]
        else:
            self._outcome = msg
        return msg

    def progress(self) -> dict[str, Any]:
        """The job's state and task counts: maps_done/maps, reduces_done/reduces, elapsed."""
        msg = self._poll()
        if msg.type == protocol.RESULT:
            stats = msg["summary"]["stats"]
            return {
                "state": "succeeded",
                "maps": stats["maps"],
                "maps_done": stats["maps"],
                "reduces": stats["reduces"],
                "reduces_done": stats["reduces"],
                "running": 0,
                "elapsed": stats["total_seconds"],
            }
        if msg.type == protocol.JOB_FAILED:
            return {**self._last, "state": "failed", "error": msg["error"].get("message", "")}
        return dict(self._last)

    def cancel(self) -> None:
        """Ask the master to stop the job; ``wait`` then raises JobCancelled."""
        if self._outcome is None:
            sock = self.client._socket()
            sock.send_multipart(protocol.encode(protocol.CANCEL_JOB, {"job": self.job_id}))

    def wait(self, timeout: float | None = None, progress: bool | None = None) -> JobResult:
        """Block until the job ends; returns its JobResult or raises its error.

        ``timeout`` (seconds) raises TimeoutError if the job is still running.
        """
        stream: IO[str] = sys.stderr
        show = stream.isatty() if progress is None else progress
        deadline = None if timeout is None else time.monotonic() + timeout
        # Long polls: the master answers at the job's end, or after ``wait`` with progress.
        # The answer must come well within the client's own request timeout.
        longest = min(PROGRESS_EVERY if show else LONG_POLL, self.client.timeout / 2)
        line = ""
        try:
            while True:
                wait = longest
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                msg = self._poll(wait=max(0.0, wait))
                if msg.type != protocol.PROGRESS:
                    break
                if show:
                    line = _render(self.name, msg["progress"])
                    stream.write("\r" + line)
                    stream.flush()
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {self.job_id} still running after {timeout}s")
        finally:
            if show and line:
                stream.write("\n")
                stream.flush()
        if msg.type == protocol.JOB_FAILED:
            raise _error(msg["error"])
        result = _result(self.job_id, msg)
        if self.output_dir:
            remove_temp_parts(self.output_dir)
        return result


def _render(name: str, p: dict[str, Any]) -> str:
    return (
        f"{name}: map {p.get('maps_done', 0)}/{p.get('maps', 0)}  "
        f"reduce {p.get('reduces_done', 0)}/{p.get('reduces', 0)}  "
        f"{p.get('elapsed', 0.0):.1f}s "
    )


def _loader(blob: bytes) -> Callable[[], list[tuple[Any, Any]]]:
    return lambda: list(shuffle.segment_groups(blob))


def _result(job_id: str, msg: protocol.Message) -> JobResult:
    summary = msg["summary"]
    partitions = [_loader(b) for b in msg.blobs] if summary.get("returned") else None
    return JobResult(
        job_id,
        partitions,
        list(summary.get("output_files") or []),
        dict(summary.get("counters", {})),
        dict(summary.get("stats", {})),
    )
