"""The master: two ROUTER sockets and one poll loop around ``MasterState``.

The loop reads frames, turns each valid message into an event for the state,
and turns the commands that come back into messages. It reads the clock
(``time.monotonic``) and hands it in; it decides nothing itself. It never
unpickles anything: job code, records and results stay opaque bytes.

With a state directory the master keeps a journal (``zmqmr.journal``): the
state's ``Persist`` commands are appended as they come, and the messages of
one loop turn wait until the turn's entries are fsynced together (write-ahead,
one fsync per turn rather than per event). At start the journal is replayed
through the state (``zmqmr.recovery``) and rewritten compacted; it is
compacted again as jobs end. Result bytes for clients live in a
``ResultStore``, bounded in memory.

Job commits and aborts of output dirs (``zmqmr.commit``) run in a thread of
their own, whose outcomes come back into the loop as events.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import Any, NoReturn

import zmq

from . import commit, dashboard, protocol, recovery, state
from . import events as events_
from .config import DEFAULT_CLIENT_BIND, DEFAULT_WORKER_BIND, ClusterSettings
from .errors import ProtocolError
from .journal import Journal, StateDirError
from .records import printable
from .results import ResultStore
from .security import Gatekeeper, HandshakeWatch, Keys, check_bind
from .wakeup import StopEvent

log = logging.getLogger(__name__)
_NOBLOCK = int(zmq.NOBLOCK)

#: Sockets refuse messages larger than this before they reach the loop.
MAX_MESSAGE_BYTES = 2 * 1024 * 1024 * 1024 - 1
#: A stopping master waits this long (seconds) for commits and aborts under way.
SHUTDOWN_COMMIT_WAIT = 10.0
#: Seconds one socket is read for in a turn of the loop, at most (about).
DRAIN_SECONDS = 0.1
#: Allocations between the cyclic garbage collector's youngest-generation passes
#: while the loop serves (Python's default: 700). A big job's tables are hundreds
#: of thousands of long-lived objects that every pass walks again as they age;
#: at the default about a seventh of the loop's CPU went to those passes.
GC_THRESHOLD = 20_000


class Master:
    def __init__(
        self,
        worker_bind: str = DEFAULT_WORKER_BIND,
        client_bind: str = DEFAULT_CLIENT_BIND,
        settings: ClusterSettings | None = None,
        keys: Keys | None = None,
        insecure: bool = False,
        state_dir: str | None = None,
        http: str | None = None,
    ) -> None:
        """``http``: HOST:PORT of the dashboard (see ``zmqmr.dashboard``), None for none;
        the default address, if taken, gives way to a free port."""
        check_bind(worker_bind, keys, insecure, "the master's worker port")
        check_bind(client_bind, keys, insecure, "the master's client port")
        http_at = dashboard.parse_http(http) if http else None
        if http_at is not None:
            check_bind(dashboard.endpoint(*http_at), keys, insecure, "the master's dashboard")
        self.settings = settings or ClusterSettings()
        self.state = state.MasterState(self.settings, durable=state_dir is not None)
        self.journal = Journal(state_dir) if state_dir is not None else None
        results_dir = None if state_dir is None else os.path.join(state_dir, "results")
        self.results = ResultStore(self.settings.result_store_limit, results_dir)
        self._outbox: list[events_.Command] = []
        #: Messages for each worker in this loop turn: sent together at its end (a BATCH).
        self._to_workers: dict[bytes, list[protocol.Message]] = {}
        #: Workers sent anything since the last heartbeat round (they need no heartbeat).
        self._sent_since_beat: set[bytes] = set()
        self._compacted = 0  # journal bytes after the last compaction
        self._ended = False  # a job ended in this loop turn: compaction may be due
        self.committer = commit.Committer()  # a recovered job may be committing
        self.keys = keys
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.gatekeeper = Gatekeeper(self.ctx, keys) if keys else None
        self.workers = self._router(worker_bind)
        self.clients = self._router(client_bind)
        self.worker_address = self.workers.getsockopt_string(zmq.LAST_ENDPOINT)
        self.client_address = self.clients.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stop_event = StopEvent()  # set: the poll below wakes at once
        self.dropped = 0
        # Peers that fail the CURVE handshake (no keys, wrong keys) never reach the
        # loop as messages: their refusals are read from the sockets' monitors.
        self._watches = [
            (HandshakeWatch(self.workers), "worker"),
            (HandshakeWatch(self.clients), "client"),
        ]
        self._refusals: dict[str, tuple[float, int]] = {}  # port -> (last logged, not logged)
        self._seq = 0
        self.dashboard: dashboard.Dashboard | None = None
        if http_at is not None:
            try:
                self.dashboard = dashboard.Dashboard(
                    *http_at,
                    self.ctx,
                    self.client_address,
                    keys,
                    fallback=http == dashboard.DEFAULT_HTTP,
                )
            except BaseException:
                self.close()
                raise
            self.dashboard.start()

        if self.journal is not None:  # bound, but no message is read before it is done
            try:
                self._recover()
            except BaseException:
                self.close()
                raise

    @property
    def dashboard_url(self) -> str | None:
        """The dashboard's address with its token, if it serves one."""
        return self.dashboard.url if self.dashboard is not None else None

    def _router(self, bind: str) -> zmq.Socket[Any]:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.linger = 0
        if self.keys is not None:
            self.keys.server(sock)
        sock.bind(bind)
        return sock

    def _recover(self) -> None:
        """Replay the journal through the state, then write it again, compacted."""
        assert self.journal is not None
        entries = self.journal.replay()
        now = time.monotonic()
        for i, entry in enumerate(entries):
            try:
                self.state.handle(events_.Replayed(entry, stimulus=f"replay-{i}"), now)
            except Exception as exc:
                raise StateDirError(
                    f"{self.journal.path}: entry {i} ({entry.kind}) cannot be replayed: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
        self.results.retain(
            {
                j.id
                for j in self.state.finished.values()
                if isinstance(j.outcome, events_.SendResult) and j.outcome.summary.returned
            }
        )
        self._compact()
        if entries:
            log.info("replayed %d journal entries from %s", len(entries), self.journal.path)
        self._handle(events_.Recovered(stimulus="recovered"))
        self._flush()

    def _compact(self) -> None:
        assert self.journal is not None
        self.journal.rewrite(recovery.journal_entries(self.state))
        self._compacted = self.journal.size

    def _flush(self) -> None:
        """Make this turn's journal entries durable, then send what waited for them."""
        if self.journal is not None:
            self.journal.sync()
            if self._ended and (
                not self.state.active or self.journal.size > 2 * self._compacted + (1 << 20)
            ):
                self._compact()
        self._ended = False
        outbox, self._outbox = self._outbox, []
        for cmd in outbox:
            try:
                self._execute(cmd)
            except Exception:
                log.exception("could not carry out %s [%s]", type(cmd).__name__, cmd.stimulus)
        self._send_to_workers()

    def _send_to_workers(self) -> None:
        """Send each worker the messages of this turn, as few ZeroMQ messages as will do."""
        pending, self._to_workers = self._to_workers, {}
        self._sent_since_beat.update(pending)
        for wid, msgs in pending.items():
            try:
                packed = protocol.pack(msgs)
            except Exception:  # one message does not encode: send the others alone
                packed = []
                for msg in msgs:
                    try:
                        packed.append(protocol.encode(msg))
                    except Exception:
                        log.exception("could not encode %s for %r", msg.TYPE, wid[:64])
            for frames in packed:
                self._send_frames(self.workers, wid, frames, "BATCH")

    def _close_store(self) -> None:
        self.results.close()
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    def close(self, linger: int = 0) -> None:
        if self.dashboard is not None:
            self.dashboard.stop()
            self.dashboard = None
        self.committer.close()
        self._close_store()
        for watch, _ in self._watches:
            watch.close()
        self.workers.close(linger)
        self.clients.close(linger)
        if self.gatekeeper is not None:
            self.gatekeeper.stop()
        self.ctx.term()
        self.stop_event.close()

    def run(self) -> None:
        """Serve until ``stop_event`` is set."""
        poller = zmq.Poller()
        poller.register(self.workers, zmq.POLLIN)
        poller.register(self.clients, zmq.POLLIN)
        poller.register(self.committer.fileno(), zmq.POLLIN)
        poller.register(self.stop_event.fileno(), zmq.POLLIN)
        # A monitor is read when it has an event, not asked on every turn of the loop.
        watches = [(w.monitor, w, port) for w, port in self._watches if w.monitor is not None]
        for monitor, _, _ in watches:
            poller.register(monitor, zmq.POLLIN)
        interval = self.settings.heartbeat_interval
        next_beat = time.monotonic()
        threshold = gc.get_threshold()  # the process's own, put back when the loop ends
        gc.set_threshold(GC_THRESHOLD, *threshold[1:])
        try:
            while not self.stop_event.is_set():
                wake = self.state.wake_at()  # a long poll falling due
                due = next_beat if wake is None else min(next_beat, wake)
                wait = max(0.0, min(due - time.monotonic(), 0.25))
                events = dict(poller.poll(int(wait * 1000) + 1))
                woke = time.monotonic()
                if self.workers in events:
                    self._drain(self.workers, True)
                if self.clients in events:
                    self._drain(self.clients, False)
                if self.committer.fileno() in events:
                    self._committed()
                for monitor, watch, port in watches:
                    if monitor in events:
                        for reason in watch.drain():
                            self._refused(port, reason)
                now = time.monotonic()
                if now >= next_beat or (wake is not None and now >= wake):
                    if now - woke > interval / 2:
                        # A long turn (a huge SUBMIT to decode, a burst of requests):
                        # what the workers sent meanwhile is read before the tick
                        # judges their silence, so none is declared dead for it.
                        self._drain(self.workers, True)
                    self._handle(events_.Tick(stimulus=self._stimulus("tick")))
                if self.dashboard is not None and self.dashboard.wants(now):
                    self.dashboard.publish(self.state.status(now).flat(), now)
                if now >= next_beat:
                    next_beat = now + interval
                    # Any message is a heartbeat to a worker: one sent something since
                    # the last round needs none (at most two intervals apart, far
                    # inside worker_timeout). Alone, as it always was: pre-encoded.
                    sent = self._sent_since_beat
                    for wid in self.state.workers:
                        if wid not in sent:
                            self._send_frames(self.workers, wid, _HEARTBEAT, "HEARTBEAT")
                    sent.clear()
                self._flush()
            # A commit under way ends first (its client hears the result), then what
            # the shutdown aborts is removed before the master goes.
            self.committer.wait_idle(SHUTDOWN_COMMIT_WAIT)
            self._committed()
            self._flush()
            self._handle(events_.Shutdown(stimulus="shutdown"))
            self._flush()
            self.committer.wait_idle(SHUTDOWN_COMMIT_WAIT)
            self.close(linger=500)  # let the goodbyes out
        except BaseException:
            self.close()
            raise
        finally:
            gc.set_threshold(*threshold)

    def _committed(self) -> None:
        """Hand the outcomes of finished commits and aborts to the state."""
        for done in self.committer.outcomes():
            error = protocol.ErrorInfo.make("OutputCommitError", done.error) if done.error else None
            if done.kind == "commit":
                event: events_.Event = events_.JobCommitted(
                    done.job_id, error, stimulus=self._stimulus("committed")
                )
            else:
                event = events_.JobAborted(done.job_id, error, stimulus=self._stimulus("aborted"))
            if error is not None:
                log.warning("%s of job %s failed: %s", done.kind, done.job_id, done.error)
            self._handle(event)

    def _refused(self, port: str, reason: str) -> None:
        """Log a refused handshake: the first at once, then at most one line per 10 s."""
        now = time.monotonic()
        last, quiet = self._refusals.get(port, (-1e9, 0))
        if now - last < 10.0:
            self._refusals[port] = (last, quiet + 1)
            return
        more = f" ({quiet} more since the last report)" if quiet else ""
        log.warning("a peer was refused at the %s port: %s%s", port, reason, more)
        self._refusals[port] = (now, 0)

    def _stimulus(self, what: str) -> str:
        self._seq += 1
        return f"{what}-{self._seq}"

    def _drain(self, sock: zmq.Socket[Any], from_workers: bool) -> None:
        recv = protocol.recv_frames
        # Bounded in messages and in time, so one busy socket cannot starve the other
        # or hold up the loop's heartbeats (the rest wait in the socket).
        until = time.monotonic() + DRAIN_SECONDS
        every = 8 if from_workers else 1  # a client's message may take long (a SUBMIT)
        for n in range(1000):
            if n and n % every == 0 and time.monotonic() > until:
                return
            try:
                frames = recv(sock, _NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue  # a ROUTER always gives an identity; nothing to answer
            peer = frames[0]
            if from_workers:
                self._from_worker(peer, frames)
                continue
            try:
                msg = protocol.decode(frames[1:])
                stimulus = self._stimulus(msg.TYPE.lower())
                event = _client_event(peer, msg, stimulus)
            except Exception as exc:  # ProtocolError, or a decoder's bug: never out of the loop
                if not isinstance(exc, ProtocolError):
                    log.exception("decoding a message from %r failed", peer[:64])
                self.dropped += 1
                log.warning("dropping a malformed message from client %r: %s", peer[:64], exc)
                job = protocol.job_of(frames[1:])
                if job is not None and len(frames) > 2 and bytes(frames[2]) == b"SUBMIT":
                    error = protocol.ErrorInfo.make("JobSubmitError", f"malformed job: {exc}")
                    self._send(sock, peer, protocol.Rejected(job, error))
                continue
            self._handle(event)

    def _from_worker(self, peer: bytes, frames: list[bytes]) -> None:
        """One ZeroMQ message from a worker: a message or a BATCH, each part an event.
        Anything malformed drops the worker (after the parts that were valid)."""
        problem = None
        try:
            batch = protocol.decode_batch(frames[1:])
            # One event: its slots filled at once. Several: after the last.
            one = len(batch.parts) == 1 and not batch.errors
            for msg in batch.parts:
                self._handle(_worker_event(peer, msg, self._stimulus(_STIMULI[msg.TYPE])), one)
            if one:
                return
            if batch.errors:
                problem = batch.errors[0]
        except Exception as exc:  # ProtocolError, or a decoder's bug: never out of the loop
            if not isinstance(exc, ProtocolError):
                log.exception("decoding a message from %r failed", peer[:64])
            problem = str(exc)
        if problem is None:
            self._handle(None)
            return
        self.dropped += 1
        log.warning("dropping a malformed message from worker %r: %s", peer[:64], problem)
        if peer in self.state.workers:
            event = events_.WorkerMisbehaved(
                peer, problem[:200], stimulus=self._stimulus("malformed")
            )
            self._handle(event)
        self._handle(None)

    def _handle(self, event: events_.Event | None, schedule: bool = True) -> None:
        """Hand one event to the state and carry out its commands; nothing escapes.
        None: the assignments that events taken with ``schedule=False`` left due."""
        try:
            if event is None:
                commands = self.state.settle(time.monotonic())
            else:
                commands = self.state.handle(event, time.monotonic(), schedule)
        except Exception:
            what = "settling" if event is None else event.stimulus
            log.exception("the state machine failed on %s; the event is dropped", what)
            return
        for cmd in commands:
            try:
                if type(cmd) is events_.Assign and not self._outbox and self.journal is None:
                    self._assign(cmd)  # most of what comes back: no journal to wait for
                elif isinstance(cmd, events_.Persist):
                    if self.journal is not None:
                        self.journal.append(cmd.entry)
                        self._ended |= cmd.entry.kind in ("end", "collected")
                elif isinstance(cmd, events_.StoreResult):  # durable before the job's end
                    self.results.put(cmd.job_id, cmd.blobs)
                elif self._outbox or (self.journal is not None and self.journal.dirty):
                    self._outbox.append(cmd)  # after the entries before it are on disk
                else:
                    self._execute(cmd)
            except Exception:
                log.exception("could not carry out %s [%s]", type(cmd).__name__, cmd.stimulus)

    def _send_frames(
        self, sock: zmq.Socket[Any], peer: bytes, frames: list[bytes], what: str
    ) -> None:
        try:
            protocol.send_frames(sock, protocol.routed(peer, frames), _NOBLOCK)
        except zmq.ZMQError as exc:  # EHOSTUNREACH (gone) or EAGAIN (queue full)
            log.debug("could not send %s to %r: %s", what, peer[:64], exc)

    def _send(self, sock: zmq.Socket[Any], peer: bytes, msg: protocol.Message) -> None:
        if sock is self.workers:  # at the end of the loop turn, with the worker's others
            self._to_workers.setdefault(peer, []).append(msg)
        else:
            self._send_frames(sock, peer, protocol.encode(msg), msg.TYPE)

    def _assign(self, cmd: events_.Assign) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "assign attempt %d (%s task %d of job %s) to %r: %s [%s]",
                cmd.attempt,
                cmd.kind,
                cmd.task,
                cmd.job_id,
                cmd.worker[:64],
                cmd.reason,
                cmd.stimulus,
            )
        code, records = cmd.code, cmd.records
        if code is None:
            blobs = [] if records is None else [records]
        else:
            blobs = [code] if records is None else [code, records]
        assign = protocol.Assign(
            cmd.attempt,
            cmd.job_id,
            cmd.kind,
            cmd.task,
            cmd.spec,
            code is not None,
            records is not None,
            blobs=blobs,
        )
        queued = self._to_workers.get(cmd.worker)
        if queued is None:
            self._to_workers[cmd.worker] = [assign]
        else:
            queued.append(assign)

    def _execute(self, cmd: events_.Command) -> None:
        w, c = self.workers, self.clients
        match cmd:
            case events_.Assign():
                self._assign(cmd)
            case events_.Cancel():
                log.debug("cancel attempt %d: %s [%s]", cmd.attempt, cmd.reason, cmd.stimulus)
                self._send(w, cmd.worker, protocol.Cancel(cmd.attempt))
            case events_.Relocate():
                self._send(w, cmd.worker, protocol.Relocate(cmd.attempt, cmd.location))
            case events_.DropJob():
                self._send(w, cmd.worker, protocol.DropJob(cmd.job_id))
            case events_.Welcome():
                s = self.settings
                self._send(w, cmd.worker, protocol.Welcome(s.heartbeat_interval, s.worker_timeout))
            case events_.Reregister():
                log.debug("asking %r to register: %s", cmd.worker[:64], cmd.reason)
                self._send(w, cmd.worker, protocol.Reconnect())
            case events_.JobAccepted():
                self._send(c, cmd.client, protocol.Accepted(cmd.job_id))
            case events_.JobRejected():
                log.info(
                    "job %s rejected: %s [%s]",
                    printable(cmd.job_id),
                    printable(cmd.error.message),
                    cmd.stimulus,
                )
                self._send(c, cmd.client, protocol.Rejected(cmd.job_id, cmd.error))
            case events_.SendProgress():
                self._send(c, cmd.client, protocol.Progress(cmd.job_id, cmd.progress))
            case events_.SendResult():
                blobs = cmd.blobs
                if cmd.summary.returned and not blobs:
                    stored = self.results.get(cmd.job_id)
                    if stored is None:
                        message = f"the result of job {cmd.job_id} was lost by the master"
                        error = protocol.ErrorInfo("JobLost", message)
                        self._send(c, cmd.client, protocol.JobFailed(cmd.job_id, error))
                        return
                    blobs = stored
                self._send(c, cmd.client, protocol.Result(cmd.job_id, cmd.summary, blobs=blobs))
            case events_.DropResult():
                self.results.drop(cmd.job_id)
            case events_.Persist() | events_.StoreResult():  # carried out in _handle
                pass
            case events_.SendJobFailed():
                self._send(c, cmd.client, protocol.JobFailed(cmd.job_id, cmd.error))
            case events_.SendStatus():
                self._send(c, cmd.client, protocol.StatusReply(cmd.status))
            case events_.SendJobInfo():
                self._send(c, cmd.client, protocol.JobInfoReply(cmd.job_id, cmd.detail))
            case events_.AskLogs():
                ask = protocol.AskLogs(cmd.request, cmd.job_id, cmd.kind, cmd.task)
                self._send(w, cmd.worker, ask)
            case events_.SendLogs():
                logs = protocol.Logs(0, cmd.job_id, cmd.logs, cmd.more, cmd.missing)
                self._send(c, cmd.client, logs)
            case events_.CommitJob():
                log.debug("commit job %s: %s [%s]", cmd.job_id, cmd.reason, cmd.stimulus)
                self.committer.commit(cmd.job_id, cmd.output_dir, cmd.approved, cmd.stimulus)
            case events_.AbortJob():
                log.debug("abort job %s: %s [%s]", cmd.job_id, cmd.reason, cmd.stimulus)
                self.committer.abort(cmd.job_id, cmd.output_dir, cmd.stimulus)
            case events_.Note():  # names from peers are escaped: no forged log lines
                if cmd.reason:
                    log.info(
                        "%s: %s [%s]", printable(cmd.what), printable(cmd.reason), cmd.stimulus
                    )
                else:
                    log.info("%s [%s]", printable(cmd.what), cmd.stimulus)
            case _:
                _unreachable(cmd)


_HEARTBEAT = protocol.encode(protocol.Heartbeat())
#: The stimulus prefix of each message type ("done-17").
_STIMULI = {name: name.lower() for name in protocol.MESSAGES}


def _unreachable(x: NoReturn) -> NoReturn:  # pragma: no cover - mypy proves it
    raise TypeError(f"unknown command {x!r}")


def _worker_event(wid: bytes, msg: protocol.Message, stimulus: str) -> events_.Event:
    match msg:  # the commonest first: cases are tried in order
        case protocol.Done():
            return events_.AttemptDone(wid, msg.attempt, msg.report, msg.result, stimulus=stimulus)
        case protocol.Heartbeat():
            return events_.WorkerSeen(wid, msg.progress, msg.seen, stimulus=stimulus)
        case protocol.Failed():
            return events_.AttemptFailed(
                wid, msg.attempt, msg.kind, msg.error, msg.record, stimulus=stimulus
            )
        case protocol.FetchFailed():
            return events_.FetchFailed(
                wid, msg.attempt, msg.map_task, msg.map_attempt, msg.reason, stimulus=stimulus
            )
        case protocol.Ready():
            return events_.WorkerReady(
                wid, msg.slots, msg.shuffle, msg.host, msg.pid, msg.held, stimulus=stimulus
            )
        case protocol.Bye():
            return events_.WorkerLeft(wid, stimulus=stimulus)
        case protocol.Logs():
            return events_.LogsArrived(
                wid, msg.request, msg.job, msg.logs, msg.more, stimulus=stimulus
            )
    raise ProtocolError(f"{msg.TYPE} is not a worker's message")


def _client_event(cid: bytes, msg: protocol.Message, stimulus: str) -> events_.Event:
    match msg:
        case protocol.Submit():
            return events_.JobSubmitted(
                cid, msg.job, msg.spec, msg.blobs[0], msg.blobs[1:], stimulus=stimulus
            )
        case protocol.Poll():
            return events_.PollJob(cid, msg.job, msg.wait, stimulus=stimulus)
        case protocol.CancelJob():
            return events_.CancelJob(cid, msg.job, stimulus=stimulus)
        case protocol.AckJob():
            return events_.AckJob(cid, msg.job, stimulus=stimulus)
        case protocol.StatusRequest():
            return events_.StatusRequest(cid, stimulus=stimulus)
        case protocol.JobInfo():
            return events_.JobInfoRequest(cid, msg.job, stimulus=stimulus)
        case protocol.GetLogs():
            return events_.LogsRequest(cid, msg.job, msg.kind, msg.task, stimulus=stimulus)
    raise ProtocolError(f"{msg.TYPE} is not a client's message")
