"""What the master remembers to show: attempt timelines, failures, lost workers,
the history of finished jobs, and the relay of attempt logs from workers to clients.

``MasterState`` owns an ``Observer`` and tells it what happens (an attempt
started, shuffled, ended; a task failed; a worker was lost; a job was
collected); the observer keeps bounded records of it and builds the views
(``zmqmr status``, ``zmqmr status JOB``, the dashboard). It decides nothing
about scheduling. Every call costs O(1), apart from the views, which cost what
they show. With a state dir, each finished job it remembers is journaled
(a "history" entry: outcome, counters, stats, tasks, failures; not its
timeline), so the history survives a restart. Pure, like the state: imports
the standard library and zmqmr's protocol, events, tables, journal and
recovery modules only; the clock is passed in.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import recovery
from .events import AskLogs, Command, SendLogs
from .journal import Entry
from .protocol import (
    MAX_LOGS,
    AttemptInfo,
    AttemptLog,
    ErrorInfo,
    JobDetail,
    JobStatus,
    LostWorker,
)
from .records import printable
from .tables import MAP, REDUCE, Attempt, Job, Worker

if TYPE_CHECKING:
    from .state import MasterState

#: Attempts a job's timeline keeps (the latest); a finished job's keeps fewer.
TIMELINE_ATTEMPTS = 2000
HISTORY_ATTEMPTS = 500
#: Failures (with their errors and log tails) kept per job, the latest.
FAILURES_KEPT = 20
#: Lost workers shown (greyed out), the latest.
LOST_WORKERS = 20
#: How long the master waits for workers' attempt logs before answering without them.
LOGS_WAIT = 3.0
#: Bytes of logs (``AttemptLog.wire_bytes``) one answer to a client carries at most,
#: whatever the workers sent: the rest are counted in its ``more``.
LOGS_REPLY_BYTES = 32 * 1024 * 1024
#: A remembered job's texts (error messages, tracebacks, log tails) are journaled up to
#: this many characters each (their tails).
JOURNALED_TEXT = 4096


def worker_label(w: Worker) -> str:
    return w.label


@dataclass(slots=True)
class JobRecord:
    """What is kept of a job: its timeline and failures; with ``status``, a finished one."""

    submitted: float
    timeline: deque[AttemptInfo] = field(default_factory=lambda: deque(maxlen=TIMELINE_ATTEMPTS))
    dropped: int = 0
    failures: deque[ErrorInfo] = field(default_factory=lambda: deque(maxlen=FAILURES_KEPT))
    status: JobStatus | None = None
    tasks: dict[str, int] = field(default_factory=dict)
    ended_at: float = 0.0


def task_counts(job: Job) -> dict[str, int]:
    """Tasks by state, per phase: idle, running, done (an ended job: done and not done)."""
    counts: dict[str, int] = {}
    for kind in (MAP, REDUCE):
        total, done = len(job.tasks(kind)), job.done[kind]
        idle = total - done if job.ended else len(job.idle[kind])
        counts[f"{kind}_done"] = done
        counts[f"{kind}_idle"] = idle
        counts[f"{kind}_running"] = max(0, total - done - idle)
        counts[f"{kind}_attempts_running"] = job.n_running[kind]
    return counts


@dataclass(slots=True)
class _LogRequest:
    client: bytes
    job: str
    waiting: dict[bytes, str]  # worker id -> its name, until it answers
    logs: list[AttemptLog] = field(default_factory=list)
    more: int = 0
    size: int = 0  # wire bytes of ``logs``


class Observer:
    """Bounded records of what happened, for people to look at."""

    def __init__(self, history_jobs: int = 100) -> None:
        self.history_jobs = history_jobs
        self.jobs: dict[str, JobRecord] = {}  # jobs the master holds
        self.history: OrderedDict[str, JobRecord] = OrderedDict()  # collected, oldest first
        self.entries: dict[int, AttemptInfo] = {}  # running attempt id -> its timeline entry
        self.lost: deque[tuple[LostWorker, float]] = deque(maxlen=LOST_WORKERS)
        self.requests: dict[int, _LogRequest] = {}
        self._deadlines: list[tuple[float, int]] = []

    # -- what happens ------------------------------------------------------------

    def submitted(self, job: Job) -> None:
        self.jobs[job.id] = JobRecord(job.submitted)

    def started(self, att: Attempt, now: float, rerun: bool) -> None:
        rec = self.jobs.get(att.job.id)
        if rec is None:
            return
        at = max(0.0, now - rec.submitted)
        entry = AttemptInfo(
            att.id,
            att.task.kind,
            att.task.index,
            att.worker.label,
            at,
            at if att.began is not None else None,  # began; else queued on its worker
            None,
            None,
            "running",
            att.backup,
            rerun,
        )
        timeline = rec.timeline
        if len(timeline) == timeline.maxlen:
            rec.dropped += 1
        timeline.append(entry)
        self.entries[att.id] = entry

    def began(self, att: Attempt, now: float) -> None:
        """A queued attempt was reported running."""
        entry = self.entries.get(att.id)
        rec = self.jobs.get(att.job.id)
        if entry is not None and entry.began is None and rec is not None:
            entry.began = max(entry.start, now - rec.submitted)

    def shuffled(self, att: Attempt, now: float) -> None:
        entry = self.entries.get(att.id)
        if entry is not None and entry.shuffled is None:
            rec = self.jobs.get(att.job.id)
            if rec is not None:
                entry.shuffled = max(0.0, now - rec.submitted)

    def ended(self, att: Attempt, now: float, outcome: str, error: str = "") -> None:
        entry = self.entries.pop(att.id, None)
        rec = self.jobs.get(att.job.id)
        if entry is None or rec is None:
            return
        entry.end = max(entry.start, now - rec.submitted)
        entry.outcome = outcome
        entry.error = printable(error)[:1000] if error else ""
        if entry.began is None and outcome in ("done", "failed"):
            entry.began = entry.start  # it ran between two heartbeats: when is not known
        w = att.worker
        if outcome in ("done", "failed") and w.load > w.slots:
            # the worker starts its oldest queued attempt in the slot this one leaves
            for other in w.running.values():
                queued = self.entries.get(other.id)
                if other is not att and queued is not None and queued.began is None:
                    queued.began = max(queued.start, entry.end)
                    break

    def failed(self, job: Job, error: ErrorInfo) -> None:
        rec = self.jobs.get(job.id)
        if rec is not None:
            rec.failures.append(error)

    def worker_lost(self, w: Worker, now: float, why: str) -> None:
        name = printable(w.id.decode("utf-8", "backslashreplace"))[:200]
        lost = LostWorker(name, w.host, w.pid, w.slots, 0.0, printable(why)[:1000])
        self.lost.append((lost, now))

    def remember(self, job: Job, status: JobStatus, now: float) -> None:
        """A finished job leaves the master's tables: keep it in the history."""
        rec = self.jobs.pop(job.id, None)
        if rec is None or self.history_jobs <= 0:
            return
        rec.status = status
        rec.tasks = task_counts(job)
        rec.ended_at = job.finished if job.finished is not None else now
        while len(rec.timeline) > HISTORY_ATTEMPTS:
            rec.timeline.popleft()
            rec.dropped += 1
        self.history.pop(job.id, None)
        self.history[job.id] = rec
        while len(self.history) > self.history_jobs:
            self.history.popitem(last=False)

    # -- views ------------------------------------------------------------------------

    def history_status(self, now: float) -> list[JobStatus]:
        return [_aged(rec, now) for rec in self.history.values()]

    def lost_workers(self, now: float) -> list[LostWorker]:
        return [
            LostWorker(w.id, w.host, w.pid, w.slots, round(max(0.0, now - when), 3), w.reason)
            for w, when in self.lost
        ]

    def detail(
        self, job_id: str, status: JobStatus | None, tasks: dict[str, int], now: float
    ) -> JobDetail | None:
        """A job the master holds (``status`` given) or remembers, in detail; None: neither."""
        rec = self.jobs.get(job_id) if status is not None else self.history.get(job_id)
        if rec is None:
            return None if status is None else JobDetail(status, tasks, [], [], 0)
        if status is None:
            status, tasks = _aged(rec, now), rec.tasks
        return JobDetail(
            status,
            tasks,
            [_copy(e) for e in rec.timeline],
            list(rec.failures),
            rec.dropped,
        )

    # -- the journal: a state dir keeps the history across a restart ------------------

    def history_fields(self, job_id: str) -> dict[str, Any] | None:
        """A remembered job as a journal entry's fields (its timeline is not kept)."""
        rec = self.history.get(job_id)
        if rec is None or rec.status is None:
            return None
        status = rec.status.to_json()
        if rec.status.error is not None:
            status["error"] = rec.status.error.trimmed(JOURNALED_TEXT).to_json()
        return {
            "job": job_id,
            "status": status,
            "tasks": dict(rec.tasks),
            "failures": [f.trimmed(JOURNALED_TEXT).to_json() for f in rec.failures],
        }

    def restore(self, f: dict[str, Any], now: float) -> None:
        """A journaled history entry, back (it ended, as far as this master knows, now)."""
        status = JobStatus.from_json(f["status"], "journal: history")
        tasks = {str(k): int(v) for k, v in dict(f["tasks"]).items()}
        rec = JobRecord(now, status=status, tasks=tasks, ended_at=now)
        rec.failures.extend(ErrorInfo.from_json(e, "journal: failure") for e in f["failures"])
        self.history.pop(status.id, None)
        self.history[status.id] = rec
        while len(self.history) > self.history_jobs:
            self.history.popitem(last=False)

    def journal_entries(self) -> list[Entry]:
        """The history as entries, for a compacted journal (oldest first)."""
        entries = []
        for job_id in self.history:
            fields = self.history_fields(job_id)
            if fields is not None:
                entries.append(Entry("history", fields))
        return entries

    def remembers(self, job_id: str) -> bool:
        return job_id in self.history

    def forget_history(self, job_id: str) -> None:
        self.history.pop(job_id, None)

    # -- attempt logs: asked of every live worker, answered when all have ------------

    def ask_logs(
        self,
        request: int,
        client: bytes,
        job_id: str,
        kind: str | None,
        task: int | None,
        workers: list[Worker],
        now: float,
    ) -> list[Command]:
        req = _LogRequest(client, job_id, {w.id: worker_label(w) for w in workers})
        if not req.waiting:
            return [SendLogs(client, job_id, [], 0, [], reason="no worker to ask")]
        self.requests[request] = req
        heapq.heappush(self._deadlines, (now + LOGS_WAIT, request))
        return [AskLogs(w.id, request, job_id, kind, task) for w in workers]

    def logs_arrived(
        self, worker: bytes, request: int, job_id: str, logs: list[AttemptLog], more: int
    ) -> list[Command]:
        req = self.requests.get(request)
        if req is None or req.job != job_id or worker not in req.waiting:
            return []  # late, repeated, or not asked of this worker
        name = req.waiting.pop(worker)
        room = max(0, MAX_LOGS * 64 - len(req.logs))
        taken = 0
        for log in logs[:room]:
            size = log.wire_bytes()
            if req.size + size > LOGS_REPLY_BYTES:  # the rest are counted, not sent
                break
            req.size += size
            log.worker = name
            taken += 1
        req.logs.extend(logs[:taken])
        req.more += more + len(logs) - taken
        if req.waiting:
            return []
        return [self._answer(request)]

    def logs_due(self, now: float) -> list[Command]:
        out: list[Command] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, request = heapq.heappop(self._deadlines)
            if request in self.requests:
                out.append(self._answer(request))
        return out

    def wake_at(self) -> float | None:
        while self._deadlines and self._deadlines[0][1] not in self.requests:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def _answer(self, request: int) -> SendLogs:
        req = self.requests.pop(request)
        req.logs.sort(key=lambda g: (g.kind != MAP, g.task, g.attempt))
        missing = sorted(req.waiting.values())
        return SendLogs(req.client, req.job, req.logs, req.more, missing, reason="logs gathered")


def _replay_history(st: MasterState, entry: Entry, now: float, out: list[Command]) -> None:
    st.observe.restore(entry.fields, now)


recovery.HANDLERS["history"] = _replay_history


def _aged(rec: JobRecord, now: float) -> JobStatus:
    """A remembered job's status, with how long ago it ended."""
    st = rec.status
    assert st is not None
    ago = round(max(0.0, now - rec.ended_at), 3)
    return JobStatus(st.id, st.name, st.progress, st.counters, st.stats, st.error, ago)


def _copy(e: AttemptInfo) -> AttemptInfo:
    return AttemptInfo(
        e.attempt,
        e.kind,
        e.task,
        e.worker,
        e.start,
        e.began,
        e.end,
        e.shuffled,
        e.outcome,
        e.backup,
        e.rerun,
        e.error,
    )
