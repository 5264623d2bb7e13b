"""Client and JobHandle.

A client talks to the master's client port with a DEALER socket: SUBMIT, then
POLL until the job ends, then ACK_JOB once it has the outcome (the master keeps
an outcome until it is acknowledged, so a reply lost on the way is asked for
again). Polls are long: the master holds each answer until the job ends or a
couple of seconds pass, so the end is seen at once. Every request waits at
most ``timeout`` seconds for an answer, and the socket is then closed and
reopened (Lazy Pirate) so a late reply cannot confuse the next request. A
single request raises ``MasterUnavailable`` on silence; a handle waiting for a
job asks again, for as long as ``master_wait`` allows (default: for ever),
so a master restarted with its state directory hands over the job's result.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import zmq

from . import commit, mapoutput, protocol
from .config import check_endpoint
from .errors import (
    ClusterError,
    JobCancelled,
    JobFailed,
    JobLost,
    JobSubmitError,
    MasterRefused,
    MasterUnavailable,
    ResultTooLarge,
)
from .job import Job, JobResult, prepare
from .progress import Progress, ProgressArg
from .security import MEMBER, HandshakeWatch, key_dir, load_keys

log = logging.getLogger(__name__)

#: Longest a waiting client's long poll asks the master to hold its answer (seconds),
#: and how often progress is reported while it is shown.
LONG_POLL = 2.0
PROGRESS_EVERY = 0.5
#: How often a waiting request checks whether the master's connection was made again.
RECONNECT_CHECK = 0.25


class Client:
    """A connection to a master's client port.

    CURVE is on by default: ``keys`` names a key directory (see ``zmqmr
    keygen``), else the default one (``$ZMQMR_KEYS`` or ``~/.zmqmr/keys``,
    made on first use) is used; ``insecure=True`` without ``keys`` turns
    CURVE off, for a master started with ``--insecure``. ``timeout`` bounds
    every wait for the master's answer, in seconds; ``worker_wait`` (seconds,
    default: for ever) how long a waiting job may see a cluster with no worker
    before it is cancelled with a ClusterError; ``master_wait`` (seconds,
    default: for ever) how long a waiting job keeps asking a master that does
    not answer (it may be restarting) before ``MasterUnavailable``. A client
    may be used from several threads at once: each thread talks over a socket
    of its own.
    """

    def __init__(
        self,
        address: str,
        keys: str | None = None,
        timeout: float = 10.0,
        insecure: bool = False,
        worker_wait: float | None = None,
        master_wait: float | None = None,
    ) -> None:
        check_endpoint(address, "the master's client address")
        for name, value in (("worker_wait", worker_wait), ("master_wait", master_wait)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self.address = address
        self.worker_wait = worker_wait
        self.master_wait = master_wait
        directory = key_dir(keys, insecure, "a client")
        self.keys = load_keys(directory, MEMBER) if directory else None
        self.timeout = timeout
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[tuple[zmq.Socket[Any], HandshakeWatch]] = set()
        # A client never closed is closed when it is collected, or at exit, at the latest.
        self._release = weakref.finalize(self, _release, self._ctx, self._open, self._lock)

    def _socket(self) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.setsockopt(zmq.IDENTITY, f"c-{uuid.uuid4().hex}".encode())
            if self.keys is not None:
                self.keys.client(sock, self.keys.master_public)
            watch = HandshakeWatch(sock, reconnects=True)
            try:
                sock.connect(self.address)
            except zmq.ZMQError:
                watch.close()
                sock.close(0)
                raise
            self._local.sock, self._local.watch = sock, watch
            with self._lock:
                self._open.add((sock, watch))
        return sock

    def _close_socket(self) -> None:
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            watch = self._local.watch
            with self._lock:
                self._open.discard((sock, watch))
            watch.close()
            sock.close(0)
            self._local.sock = self._local.watch = None

    def close(self) -> None:
        self._release()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, msg: protocol.Message) -> None:
        """Send one message that expects no answer."""
        protocol.send_frames(self._socket(), protocol.encode(msg))

    def request(
        self,
        msg: protocol.Message,
        answers: tuple[type[A], ...],
        job: str | None = None,
    ) -> A:
        """Send one request and wait for its answer (of a type in ``answers``)."""
        sock = self._socket()
        frames = protocol.encode(msg)
        protocol.send_frames(sock, frames)
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            # Asked in slices: a master restarted meanwhile never saw the request (requests
            # are idempotent), so it goes again as soon as the connection is made again.
            ready = left > 0 and sock.poll(int(min(left, RECONNECT_CHECK) * 1000) + 1)
            if not ready and left > 0:
                watch = getattr(self._local, "watch", None)
                if watch is not None and watch.reconnected():
                    log.debug("the connection to the master was made again: asking again")
                    try:
                        protocol.send_frames(sock, frames, int(zmq.NOBLOCK))
                    except zmq.Again:  # gone again already: wait for the next time
                        continue
                    deadline = time.monotonic() + self.timeout
                continue
            if not ready:
                watch = getattr(self._local, "watch", None)
                failure = watch.failure() if watch is not None else None
                self._close_socket()
                if failure:
                    raise MasterRefused(
                        f"the master at {self.address} did not let this client in: {failure}; "
                        "check --keys / Client(keys=...)"
                    )
                raise MasterUnavailable(
                    f"no answer from the master at {self.address} within {self.timeout:g}s"
                )
            try:
                reply = protocol.decode(sock.recv_multipart())
            except protocol.ProtocolError as exc:
                log.warning("dropping a malformed reply: %s", exc)
                continue
            if isinstance(reply, answers) and (job is None or getattr(reply, "job", None) == job):
                return reply
            log.debug("ignoring a stale %s", reply.TYPE)

    def submit(self, job: Job) -> JobHandle:
        """Send ``job`` to the master; returns at once with a handle."""
        slots = None
        if getattr(job, "split_size", None) is None:  # planned: for the slots there are now
            workers = self.request(protocol.StatusRequest(), (protocol.StatusReply,)).status.workers
            slots = sum(w.slots for w in workers) or None
        prepared = prepare(job, slots=slots)
        job_id = uuid.uuid4().hex[:16]
        try:
            spec = protocol.JobSpec.from_json(prepared.spec, "job")
        except protocol.ProtocolError as exc:
            raise JobSubmitError(f"the job cannot be sent: {exc}") from None
        submit = protocol.Submit(job_id, spec, blobs=[prepared.code, *prepared.records])
        answers = (protocol.Accepted, protocol.Rejected)
        if spec.output_dir is not None:  # the commit protocol's setup: zmqmr.commit
            commit.setup_job(spec.output_dir, job_id)
        # No answer is no proof that no master has the job (one restarting from its
        # journal may run it), so its _temporary stays unless it is refused.
        try:
            reply = self.request(submit, answers, job=job_id)
        except MasterRefused:
            raise
        except MasterUnavailable:  # once more: the master may have been restarting
            log.warning("no answer to the submission of job %s; sending it again", job_id)
            reply = self.request(submit, answers, job=job_id)
        if isinstance(reply, protocol.Rejected):
            if spec.output_dir is not None:
                commit.remove_job_temp(spec.output_dir, job_id)
            raise JobSubmitError(reply.error.message)
        return JobHandle(self, job_id, spec.name, spec.num_reducers, spec.output_dir)

    def run(self, job: Job, progress: ProgressArg = None) -> JobResult:
        """Run ``job`` and wait for it; map and reduce progress bars show on a TTY.

        ``progress``: see ``JobHandle.wait`` (False: no bars; a function: called
        with each progress report instead).

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
        self.send(protocol.CancelJob(job_id))
        states = {j["id"]: j["state"] for j in self.status()["jobs"]}
        return states.get(job_id)

    def status(self) -> dict[str, Any]:
        """Workers (slots, last heartbeat), the jobs the master holds (task counts), the
        finished jobs it remembers (``history``, newest last) and recently lost workers."""
        reply = self.request(protocol.StatusRequest(), (protocol.StatusReply,))
        return reply.status.flat()

    def job_info(self, job_id: str) -> dict[str, Any] | None:
        """One job in detail: tasks by state, its latest attempts, its failures with their
        errors, counters and stats; None if the master neither holds nor remembers it."""
        reply = self.request(protocol.JobInfo(job_id), (protocol.JobInfoReply,), job=job_id)
        if reply.detail is None:
            return None
        detail = reply.detail.to_json()
        detail["status"].update(detail["status"].pop("progress"))
        return detail

    def logs(self, job_id: str, kind: str | None = None, task: int | None = None) -> dict[str, Any]:
        """The captured output of a job's attempts (one task's, given ``kind`` and ``task``),
        from every live worker: ``logs`` (per attempt: stdout, stderr, log records),
        ``more`` (left out), ``missing`` (workers that did not answer)."""
        reply = self.request(protocol.GetLogs(job_id, kind, task), (protocol.Logs,), job=job_id)
        return {
            "logs": [g.to_json() for g in reply.logs],
            "more": reply.more,
            "missing": list(reply.missing),
        }


A = TypeVar("A", bound=protocol.Message)


def _release(
    ctx: zmq.Context[Any],
    open_: set[tuple[zmq.Socket[Any], HandshakeWatch]],
    lock: threading.Lock,
) -> None:
    """Close a client's sockets and its context (once: ``weakref.finalize``)."""
    with lock:
        for sock, watch in open_:
            watch.close()
            sock.close(0)
        open_.clear()
    ctx.term()


def _error(error: protocol.ErrorInfo) -> Exception:
    kind, message = error.type, error.message or "job failed"
    if kind == "JobSubmitError":
        return JobSubmitError(message)
    if kind == "JobCancelled":
        return JobCancelled(message)
    if kind == "ResultTooLarge":
        return ResultTooLarge(message)
    if kind in ("UnknownJob", "JobLost", "ResultExpired"):
        return JobLost(message)
    if kind == "MasterShutdown":
        return ClusterError(message)
    return JobFailed(
        message,
        remote_type=kind,
        remote_message=error.user_message or message,
        remote_traceback=error.traceback,
        task=error.task,
        log_tail=error.log,
    )


Outcome = protocol.Progress | protocol.Result | protocol.JobFailed


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
        self._outcome: protocol.Result | protocol.JobFailed | None = None
        self._last: dict[str, Any] = {}

    def _poll(self, wait: float = 0.0) -> Outcome:
        if self._outcome is not None:
            return self._outcome
        msg = self.client.request(
            protocol.Poll(self.job_id, wait),
            (protocol.Progress, protocol.Result, protocol.JobFailed),
            job=self.job_id,
        )
        if isinstance(msg, protocol.Progress):
            self._last = msg.progress.to_json()
            return msg
        assert isinstance(msg, (protocol.Result, protocol.JobFailed))
        self._outcome = msg
        try:
            self.client.send(protocol.AckJob(self.job_id))  # the master may forget it now
        except zmq.ZMQError as exc:
            log.debug("could not acknowledge job %s: %s", self.job_id, exc)
        return msg

    def progress(self) -> dict[str, Any]:
        """The job's state and task counts: maps_done/maps, reduces_done/reduces, elapsed."""
        msg = self._poll()
        if isinstance(msg, protocol.Result):
            stats = msg.summary.stats
            return {
                "state": "succeeded",
                "maps": int(stats["maps"]),
                "maps_done": int(stats["maps"]),
                "reduces": int(stats["reduces"]),
                "reduces_done": int(stats["reduces"]),
                "running": 0,
                "elapsed": stats["total_seconds"],
            }
        if isinstance(msg, protocol.JobFailed):
            return {**self._last, "state": "failed", "error": msg.error.message}
        return dict(self._last)

    def cancel(self) -> None:
        """Ask the master to stop the job; ``wait`` then raises JobCancelled."""
        if self._outcome is None:
            self.client.send(protocol.CancelJob(self.job_id))

    def wait(self, timeout: float | None = None, progress: ProgressArg = None) -> JobResult:
        """Block until the job ends; returns its JobResult or raises its error.

        ``timeout`` (seconds) raises TimeoutError if the job is still running.
        ``progress``: None shows map and reduce progress bars on a terminal or in
        a notebook, True or False always or never; a function is called with
        each progress report (a dict, as ``progress()`` returns) instead.
        """
        shown = Progress(self.name, progress)
        deadline = None if timeout is None else time.monotonic() + timeout
        # Long polls: the master answers at the job's end, or after ``wait`` with progress.
        # The answer must come well within the client's own request timeout.
        longest = min(PROGRESS_EVERY if shown.active else LONG_POLL, self.client.timeout / 2)
        alone_since: float | None = None  # since when the cluster has had no worker
        silent_since: float | None = None  # since when the master has not answered
        try:
            while True:
                wait = longest
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                try:
                    msg = self._poll(wait=max(0.0, wait))
                except MasterRefused:
                    raise
                except MasterUnavailable:
                    now = time.monotonic()
                    if silent_since is None:  # silent since the request went out
                        silent_since = now - self.client.timeout
                        log.warning(
                            "job %s: no answer from the master at %s; asking again",
                            self.job_id,
                            self.client.address,
                        )
                    limit = self.client.master_wait
                    if limit is not None and now - silent_since >= limit:
                        raise MasterUnavailable(
                            f"job {self.job_id}: no answer from the master at "
                            f"{self.client.address} for {now - silent_since:.1f}s (master_wait)"
                        ) from None
                    if deadline is not None and now >= deadline:
                        raise TimeoutError(
                            f"job {self.job_id}: no answer from the master for "
                            f"{now - silent_since:.1f}s, after {timeout}s"
                        ) from None
                    continue
                if silent_since is not None:
                    log.warning("job %s: the master answers again", self.job_id)
                    silent_since = None
                if not isinstance(msg, protocol.Progress):
                    break
                now = time.monotonic()
                if msg.progress.workers:
                    alone_since = None
                elif alone_since is None:
                    alone_since = now
                shown.report(msg.progress.to_json())
                limit = self.client.worker_wait
                if limit is not None and alone_since is not None and now - alone_since > limit:
                    self.cancel()
                    raise ClusterError(
                        f"job {self.job_id}: no worker joined the cluster within "
                        f"{limit:g}s (worker_wait); the job was cancelled"
                    )
                if deadline is not None and now >= deadline:
                    raise TimeoutError(f"job {self.job_id} still running after {timeout}s")
            if isinstance(msg, protocol.Result):
                shown.report(self.progress())  # the bars end full
        finally:
            shown.close()
        if isinstance(msg, protocol.JobFailed):
            raise _error(msg.error)
        return _result(self.job_id, msg)


def _loader(blob: bytes) -> Callable[[], list[tuple[Any, Any]]]:
    return lambda: list(mapoutput.segment_groups(blob))


def _result(job_id: str, msg: protocol.Result) -> JobResult:
    summary = msg.summary
    partitions = [_loader(b) for b in msg.blobs] if summary.returned else None
    return JobResult(
        job_id,
        partitions,
        list(summary.output_files),
        dict(summary.counters),
        dict(summary.stats),
        text_exact=summary.text_exact,
    )
