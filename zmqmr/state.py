"""MasterState: the whole scheduling policy of the master, and nothing else.

Rule 1: everything that decides what the cluster does lives in this file.
``MasterState.handle(event, now)`` takes one event (a worker registered, an
attempt finished, a client submitted a job, the clock ticked) and returns the
commands the shell must carry out (assign, cancel, relocate, reply). It
imports neither ``zmq`` nor ``time``: the clock is passed in, so unit tests
drive it with a fake one and assert on the commands.

The rules, after DESIGN.md §3 and the MapReduce paper:

* Liveness: any message from a worker counts as a heartbeat. A worker silent
  for ``worker_timeout`` is dead; its running attempts and its completed map
  tasks (their output lived on its disk) go back to idle. Completed reduce
  tasks stay done: their output is committed. Worker losses never count
  against a task's ``max_attempts``.
* Fencing: every attempt has an id; a completion from an attempt that is not
  running any more (its worker was declared dead, it lost to a backup, it was
  cancelled) is ignored. A message from a worker we do not know (or declared
  dead) gets RECONNECT: it must register again as a new incarnation.
* User failures (an exception, a crashed executor, a timeout) fail that attempt;
  the task is retried until ``max_attempts`` attempts failed, then the job
  fails with the user's error. A worker on which ``worker_job_failures``
  attempts of a job failed gets no more tasks of that job (unless no other
  worker is left).
* Fetch failures: one report from a reducer (it has already retried with
  timeouts, and a checksum or a missing file is final) marks that map output
  lost; the map task runs again, and every running reducer of the job is told
  the new location when it completes.
* Backup tasks: when a phase has no idle task left and slots are free, a
  running attempt that has run longer than its peers' typical (median) task
  time and ``speculation_min_seconds``, and whose estimated time to finish
  (from its progress rate, as in LATE) exceeds twice the typical time (or,
  with no progress reported, that has run three typical times), gets one
  backup on another worker; the first to finish wins, the other is
  cancelled.
* Jobs run in order of arrival: free slots go to the oldest job with work.
* Reduce tasks start when every map task of their job has completed. If a
  map output is lost while reducers run and no slot is free for the map, the
  newest reducer of that job is preempted (not a failure): reducers waiting
  for that output must not hold every slot.
* A map whose output was lost runs on another worker when one has a slot.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from dataclasses import dataclass, field
from typing import Any

from .config import ClusterSettings

IDLE, RUNNING, DONE = "idle", "running", "done"
MAP, REDUCE = "map", "reduce"
#: Job states.
QUEUED, ACTIVE, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
#: Finished jobs whose outcome no client has collected are kept up to this many.
KEEP_FINISHED = 64
#: A record on which the mapper failed this many times is skipped (skip_bad_records).
BAD_RECORD_FAILURES = 2


# -- events ---------------------------------------------------------------------


@dataclass(slots=True)
class WorkerReady:
    worker: bytes
    slots: int
    shuffle: str
    host: str
    pid: int


@dataclass(slots=True)
class WorkerSeen:
    """Any message from a worker; a heartbeat also carries attempt progress."""

    worker: bytes
    progress: list[tuple[int, float]] = field(default_factory=list)


@dataclass(slots=True)
class WorkerLeft:
    worker: bytes


@dataclass(slots=True)
class AttemptDone:
    worker: bytes
    attempt: int
    info: dict[str, Any]
    result: bytes | None = None


@dataclass(slots=True)
class AttemptFailed:
    worker: bytes
    attempt: int
    kind: str  # "user" (exception), "crash" (executor died), "lost" (not the task's fault)
    error: dict[str, str]
    record: int | None = None


@dataclass(slots=True)
class FetchFailed:
    worker: bytes
    attempt: int
    map_task: int
    map_attempt: int
    reason: str


@dataclass(slots=True)
class JobSubmitted:
    client: bytes
    job_id: str
    spec: dict[str, Any]
    code: bytes
    records: list[bytes]


@dataclass(slots=True)
class PollJob:
    """How is this job doing? With ``wait`` > 0, the answer waits for the job's end
    until ``now + wait`` (a long poll): the client learns of the end at once."""

    client: bytes
    job_id: str
    wait: float = 0.0


@dataclass(slots=True)
class CancelJob:
    client: bytes
    job_id: str


@dataclass(slots=True)
class StatusRequest:
    client: bytes


@dataclass(slots=True)
class Tick:
    pass


@dataclass(slots=True)
class Shutdown:
    """The master is stopping: tell clients and workers before it goes."""


# -- commands --------------------------------------------------------------------


@dataclass(slots=True)
class Welcome:
    worker: bytes


@dataclass(slots=True)
class Reregister:
    worker: bytes


@dataclass(slots=True)
class Assign:
    worker: bytes
    attempt: int
    job_id: str
    kind: str
    task: int
    spec: dict[str, Any]
    code: bytes | None = None
    records: bytes | None = None


@dataclass(slots=True)
class Cancel:
    worker: bytes
    attempt: int


@dataclass(slots=True)
class Relocate:
    worker: bytes
    attempt: int
    map_task: int
    location: dict[str, Any]


@dataclass(slots=True)
class DropJob:
    worker: bytes
    job_id: str


@dataclass(slots=True)
class JobAccepted:
    client: bytes
    job_id: str


@dataclass(slots=True)
class JobRejected:
    client: bytes
    job_id: str
    error: dict[str, str]


@dataclass(slots=True)
class SendProgress:
    client: bytes
    job_id: str
    progress: dict[str, Any]


@dataclass(slots=True)
class SendResult:
    client: bytes
    job_id: str
    summary: dict[str, Any]
    blobs: list[bytes]


@dataclass(slots=True)
class SendJobFailed:
    client: bytes
    job_id: str
    error: dict[str, str]


@dataclass(slots=True)
class SendStatus:
    client: bytes
    status: dict[str, Any]


# -- the tables ------------------------------------------------------------------


@dataclass(slots=True)
class Worker:
    id: bytes
    slots: int
    shuffle: str
    host: str
    pid: int
    last_seen: float
    running: set[int] = field(default_factory=set)
    has_code: set[str] = field(default_factory=set)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.slots - len(self.running)


@dataclass(slots=True)
class Attempt:
    id: int
    job_id: str
    kind: str
    task: int
    worker: bytes
    start: float
    backup: bool = False
    progress: float = 0.0


@dataclass(slots=True)
class Task:
    kind: str
    index: int
    status: str = IDLE
    running: list[int] = field(default_factory=list)
    failures: int = 0
    attempts: int = 0
    #: Map: where the winning output lives ({"worker", "attempt", "address", "sizes"}).
    output: dict[str, Any] | None = None
    #: Reduce: the encoded results, when they come back through the master.
    result: bytes | None = None
    info: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0
    bad_records: dict[int, int] = field(default_factory=dict)
    #: The worker whose copy of this map output was lost: run it elsewhere if we can.
    lost_on: bytes | None = None


@dataclass(slots=True)
class Job:
    id: str
    client: bytes
    spec: dict[str, Any]
    code: bytes
    records: list[bytes]
    maps: list[Task]
    reduces: list[Task]
    submitted: float
    status: str = QUEUED
    started: float | None = None
    maps_done_at: float | None = None
    finished: float | None = None
    excluded: set[bytes] = field(default_factory=set)
    stats: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "map_attempts",
                "reduce_attempts",
                "failed_attempts",
                "lost_attempts",
                "reexecuted_maps",
                "fetch_failures",
                "backups_launched",
                "backups_won",
                "backups_cancelled",
                "timeouts",
                "skipped_records",
                "preempted_reduces",
            ),
            0,
        )
    )
    outcome: SendResult | SendJobFailed | None = None

    @property
    def num_reducers(self) -> int:
        return len(self.reduces)

    def tasks(self, kind: str) -> list[Task]:
        return self.maps if kind == MAP else self.reduces

    def maps_complete(self) -> bool:
        return all(t.status == DONE for t in self.maps)


def _spec_error(spec: Any, nblobs: int) -> str | None:
    """Why a submitted spec cannot run, or None."""
    if not isinstance(spec, dict):
        return "spec must be an object"
    r = spec.get("num_reducers")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        return "num_reducers must be an int >= 1"
    ma = spec.get("max_attempts")
    if not isinstance(ma, int) or isinstance(ma, bool) or ma < 1:
        return "max_attempts must be an int >= 1"
    tt = spec.get("task_timeout")
    if tt is not None and (not isinstance(tt, (int, float)) or isinstance(tt, bool) or tt <= 0):
        return "task_timeout must be a positive number or null"
    splits = spec.get("splits")
    if not isinstance(splits, list) or not splits:
        return "splits must be a non-empty list"
    for s in splits:
        if not isinstance(s, dict) or s.get("kind") not in ("text", "files", "records"):
            return "each split must be an object with a known kind"
        if s["kind"] == "records":
            b = s.get("blob")
            if not isinstance(b, int) or isinstance(b, bool) or not 0 <= b < nblobs:
                return "a records split names a blob that was not sent"
    od = spec.get("output_dir")
    if od is not None and not isinstance(od, str):
        return "output_dir must be a string or null"
    return None


class MasterState:
    """Tasks, attempts, workers and jobs; ``handle`` is the only way in."""

    def __init__(self, settings: ClusterSettings | None = None) -> None:
        self.settings = settings or ClusterSettings()
        self.workers: dict[bytes, Worker] = {}
        self.jobs: dict[str, Job] = {}  # in order of arrival
        self.attempts: dict[int, Attempt] = {}
        #: Long polls not yet answered: job id -> [(client, answer-by time)].
        self.waiting: dict[str, list[tuple[bytes, float]]] = {}
        self._ids = itertools.count(1)

    # -- entry point ----------------------------------------------------------

    def handle(self, event: object, now: float) -> list[object]:
        out: list[object] = []
        handler = getattr(self, "_on_" + type(event).__name__, None)
        if handler is None:
            raise TypeError(f"unknown event {type(event).__name__}")
        handler(event, now, out)
        self._schedule(now, out)
        if self.waiting:
            self._answer_waiting(now, out)
        return out

    def wake_at(self) -> float | None:
        """When a long poll falls due, if one is waiting: handle a Tick then."""
        deadlines = [t for polls in self.waiting.values() for _, t in polls]
        return min(deadlines) if deadlines else None

    def _answer_waiting(self, now: float, out: list[object]) -> None:
        """Give ended jobs' outcomes to their long polls, and progress to those due."""
        for job_id, polls in list(self.waiting.items()):
            job = self.jobs.get(job_id)
            if job is None:  # cannot happen while polls wait; answered UnknownJob if it does
                del self.waiting[job_id]
                for client, _ in polls:
                    self._on_PollJob(PollJob(client, job_id), now, out)
                continue
            outcome = job.outcome
            if outcome is not None:
                del self.waiting[job_id]
                out.extend(dataclasses.replace(outcome, client=client) for client, _ in polls)
                del self.jobs[job_id]  # delivered: forget it
                continue
            due = [client for client, t in polls if t <= now]
            if due:
                polls[:] = [(c, t) for c, t in polls if t > now]
                if not polls:
                    del self.waiting[job_id]
                progress = self.progress(job, now)
                out.extend(SendProgress(client, job_id, progress) for client in due)

    # -- workers --------------------------------------------------------------

    def _known(self, worker: bytes, now: float, out: list[object]) -> Worker | None:
        w = self.workers.get(worker)
        if w is None:
            out.append(Reregister(worker))
            return None
        w.last_seen = now
        return w

    def _on_WorkerReady(self, ev: WorkerReady, now: float, out: list[object]) -> None:
        if ev.worker in self.workers:  # registered twice: the old incarnation is gone
            self._lose_worker(self.workers[ev.worker], now, out)
        self.workers[ev.worker] = Worker(
            ev.worker, max(1, ev.slots), ev.shuffle, ev.host, ev.pid, last_seen=now
        )
        out.append(Welcome(ev.worker))

    def _on_WorkerSeen(self, ev: WorkerSeen, now: float, out: list[object]) -> None:
        w = self._known(ev.worker, now, out)
        if w is None:
            return
        for attempt_id, fraction in ev.progress:
            att = self.attempts.get(attempt_id)
            if att is not None and att.worker == w.id:
                att.progress = min(1.0, max(att.progress, float(fraction)))

    def _on_WorkerLeft(self, ev: WorkerLeft, now: float, out: list[object]) -> None:
        w = self.workers.get(ev.worker)
        if w is not None:
            self._lose_worker(w, now, out)

    def _lose_worker(self, w: Worker, now: float, out: list[object]) -> None:
        """Forget a worker: its attempts and its map outputs are gone with it."""
        del self.workers[w.id]
        for attempt_id in list(w.running):
            att = self.attempts.pop(attempt_id, None)
            if att is None:
                continue
            job = self.jobs[att.job_id]
            task = job.tasks(att.kind)[att.task]
            task.running.remove(att.id)
            job.stats["lost_attempts"] += 1
            if task.status == RUNNING and not task.running:
                task.status = IDLE
        for job in self._active_jobs():
            for task in job.maps:
                if task.status == DONE and task.output and task.output["worker"] == w.id:
                    self._map_output_lost(job, task)

    def _map_output_lost(self, job: Job, task: Task) -> None:
        assert task.output is not None
        task.lost_on = task.output["worker"]
        task.status = IDLE if not task.running else RUNNING
        task.output = None
        job.stats["reexecuted_maps"] += 1
        job.maps_done_at = None

    def _on_Tick(self, ev: Tick, now: float, out: list[object]) -> None:
        timeout = self.settings.worker_timeout
        for w in list(self.workers.values()):
            if now - w.last_seen > timeout:
                self._lose_worker(w, now, out)
        for att in list(self.attempts.values()):
            if self.attempts.get(att.id) is not att:
                continue  # ended while handling an earlier one (its job failed)
            job = self.jobs[att.job_id]
            limit = job.spec.get("task_timeout")
            if limit is not None and now - att.start > limit:
                job.stats["timeouts"] += 1
                out.append(Cancel(att.worker, att.id))
                self._attempt_failed(
                    job,
                    att,
                    now,
                    out,
                    {
                        "type": "TaskTimeout",
                        "message": f"{att.kind} task {att.task} ran longer than "
                        f"task_timeout={limit}s",
                        "traceback": "",
                    },
                    None,
                )

    # -- attempts ----------------------------------------------------------------

    def _current(self, worker: bytes, attempt_id: int) -> Attempt | None:
        att = self.attempts.get(attempt_id)
        if att is None or att.worker != worker:
            return None
        return att

    def _finish_attempt(self, att: Attempt) -> tuple[Job, Task]:
        del self.attempts[att.id]
        w = self.workers.get(att.worker)
        if w is not None:
            w.running.discard(att.id)
        job = self.jobs[att.job_id]
        task = job.tasks(att.kind)[att.task]
        task.running.remove(att.id)
        return job, task

    def _on_AttemptDone(self, ev: AttemptDone, now: float, out: list[object]) -> None:
        if self._known(ev.worker, now, out) is None:
            return
        att = self._current(ev.worker, ev.attempt)
        if att is None:
            return  # fenced: lost, cancelled, or beaten by another attempt
        job, task = self._finish_attempt(att)
        if task.status == DONE:
            return
        info = ev.info if isinstance(ev.info, dict) else {}
        if att.kind == MAP:
            sizes = info.get("sizes")
            if (
                not isinstance(sizes, list)
                or len(sizes) != job.num_reducers
                or not all(isinstance(s, int) and s >= 0 for s in sizes)
            ):
                self._attempt_failed(
                    job,
                    att,
                    now,
                    out,
                    {
                        "type": "ProtocolError",
                        "message": "map completion without valid sizes",
                        "traceback": "",
                    },
                    None,
                )
                return
            groups = info.get("groups")
            if not (
                isinstance(groups, list)
                and len(groups) == len(sizes)
                and all(isinstance(g, int) and g >= 0 for g in groups)
            ):
                groups = [0] * len(sizes)  # unknown: reducers then report fetch progress only
            task.output = {
                "worker": att.worker,
                "attempt": att.id,
                "address": self.workers[att.worker].shuffle,
                "sizes": sizes,
                "groups": groups,
            }
        else:
            task.result = ev.result
        task.status = DONE
        task.info = info
        task.duration = now - att.start
        for other in list(task.running):  # the losers of a backup race
            loser = self.attempts[other]
            self._finish_attempt(loser)
            out.append(Cancel(loser.worker, loser.id))
            if loser.backup:
                job.stats["backups_cancelled"] += 1
        if att.backup:
            job.stats["backups_won"] += 1
        if att.kind == MAP:
            self._map_done(job, task, now, out)
        else:
            self._reduce_done(job, task, now, out)

    def _map_done(self, job: Job, task: Task, now: float, out: list[object]) -> None:
        assert task.output is not None
        location = self._location(job, task)
        for att in self.attempts.values():
            if att.job_id == job.id and att.kind == REDUCE:
                out.append(Relocate(att.worker, att.id, task.index, location))
        if job.maps_done_at is None and job.maps_complete():
            job.maps_done_at = now

    def _reduce_done(self, job: Job, task: Task, now: float, out: list[object]) -> None:
        if job.spec.get("output_dir") is None and task.info.get("too_big"):
            self._fail_job(
                job,
                now,
                out,
                {
                    "type": "ResultTooLarge",
                    "message": f"the results of partition {task.index} exceed the "
                    f"{self.settings.result_limit}-byte limit for results returned "
                    "through the master; set output_dir to write them to files",
                    "traceback": "",
                },
            )
            return
        if all(t.status == DONE for t in job.reduces):
            self._succeed_job(job, now, out)

    def _on_AttemptFailed(self, ev: AttemptFailed, now: float, out: list[object]) -> None:
        if self._known(ev.worker, now, out) is None:
            return
        att = self._current(ev.worker, ev.attempt)
        if att is None:
            return
        job = self.jobs[att.job_id]
        if ev.kind == "lost":  # not the user's fault: the worker lost the job's code
            _, task = self._finish_attempt(att)
            job.stats["lost_attempts"] += 1
            self.workers[ev.worker].has_code.discard(job.id)
            if task.status == RUNNING and not task.running:
                task.status = IDLE
            return
        self._attempt_failed(job, att, now, out, ev.error, ev.record)

    def _attempt_failed(
        self,
        job: Job,
        att: Attempt,
        now: float,
        out: list[object],
        error: dict[str, str],
        record: int | None,
    ) -> None:
        _, task = self._finish_attempt(att)
        job.stats["failed_attempts"] += 1
        task.failures += 1
        if record is not None and att.kind == MAP:
            task.bad_records[record] = task.bad_records.get(record, 0) + 1
        w = self.workers.get(att.worker)
        if w is not None:
            w.failures[job.id] = w.failures.get(job.id, 0) + 1
            if w.failures[job.id] >= self.settings.worker_job_failures:
                job.excluded.add(w.id)
        if task.status == DONE:
            return
        if task.failures >= job.spec["max_attempts"] and not self._skipping_helps(job, task):
            self._fail_job(
                job,
                now,
                out,
                {
                    "type": error.get("type", "Error"),
                    "message": (
                        f"{att.kind} task {att.task} failed {task.failures} times; "
                        f"last error: {error.get('type', '')}: {error.get('message', '')}"
                    ),
                    "traceback": error.get("traceback", ""),
                    "task": f"{att.kind} task {att.task}",
                    "user_message": error.get("message", ""),
                },
            )
            return
        if not task.running:
            task.status = IDLE

    def _skipping_helps(self, job: Job, task: Task) -> bool:
        """With skip_bad_records, failures pinned on one record do not exhaust the task."""
        if not job.spec.get("skip_bad_records") or task.kind != MAP:
            return False
        pinned = sum(task.bad_records.values())
        return task.failures - pinned < job.spec["max_attempts"] and len(task.bad_records) <= 1000

    def _on_FetchFailed(self, ev: FetchFailed, now: float, out: list[object]) -> None:
        if self._known(ev.worker, now, out) is None:
            return
        att = self._current(ev.worker, ev.attempt)
        if att is None or att.kind != REDUCE:
            return
        job = self.jobs[att.job_id]
        if not 0 <= ev.map_task < len(job.maps):
            return
        job.stats["fetch_failures"] += 1
        task = job.maps[ev.map_task]
        if task.status == DONE and task.output is not None:
            if task.output["attempt"] == ev.map_attempt:
                self._map_output_lost(job, task)
            else:  # the reducer has an old location: tell it the current one
                out.append(Relocate(att.worker, att.id, task.index, self._location(job, task)))

    # -- jobs -------------------------------------------------------------------

    def _on_JobSubmitted(self, ev: JobSubmitted, now: float, out: list[object]) -> None:
        problem = _spec_error(ev.spec, len(ev.records))
        if problem is None and ev.job_id in self.jobs:
            problem = f"job id {ev.job_id} is already in use"
        if problem is not None:
            out.append(
                JobRejected(
                    ev.client,
                    ev.job_id,
                    {"type": "JobSubmitError", "message": problem, "traceback": ""},
                )
            )
            return
        spec = ev.spec
        job = Job(
            id=ev.job_id,
            client=ev.client,
            spec=spec,
            code=ev.code,
            records=ev.records,
            maps=[Task(MAP, i) for i in range(len(spec["splits"]))],
            reduces=[Task(REDUCE, r) for r in range(spec["num_reducers"])],
            submitted=now,
        )
        self.jobs[job.id] = job
        out.append(JobAccepted(ev.client, job.id))

    def _on_PollJob(self, ev: PollJob, now: float, out: list[object]) -> None:
        job = self.jobs.get(ev.job_id)
        if job is None:
            out.append(
                SendJobFailed(
                    ev.client,
                    ev.job_id,
                    {
                        "type": "UnknownJob",
                        "traceback": "",
                        "message": f"the master does not know job {ev.job_id} (was it restarted?)",
                    },
                )
            )
            return
        if job.outcome is not None:
            out.append(dataclasses.replace(job.outcome, client=ev.client))
            del self.jobs[job.id]  # delivered: forget it
            self.waiting.pop(job.id, None)
            return
        if ev.wait > 0:
            self.waiting.setdefault(job.id, []).append((ev.client, now + ev.wait))
            return
        out.append(SendProgress(ev.client, job.id, self.progress(job, now)))

    def _on_CancelJob(self, ev: CancelJob, now: float, out: list[object]) -> None:
        job = self.jobs.get(ev.job_id)
        if job is None or job.outcome is not None:
            return
        self._end_job(job, CANCELLED, now, out)
        job.outcome = SendJobFailed(
            job.client,
            job.id,
            {"type": "JobCancelled", "message": f"job {job.id} was cancelled", "traceback": ""},
        )

    def _on_Shutdown(self, ev: Shutdown, now: float, out: list[object]) -> None:
        for job in self._active_jobs():
            self._fail_job(
                job,
                now,
                out,
                {
                    "type": "MasterShutdown",
                    "traceback": "",
                    "message": f"the master stopped while job {job.id} was running; "
                    "submit it again",
                },
            )
            assert job.outcome is not None
            out.append(job.outcome)  # pushed: the client need not poll for it
        for w in self.workers.values():
            out.append(Reregister(w.id))  # drop your attempts; register with the next master
        self.workers.clear()

    def _on_StatusRequest(self, ev: StatusRequest, now: float, out: list[object]) -> None:
        out.append(SendStatus(ev.client, self.status(now)))

    def _active_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.status in (QUEUED, ACTIVE)]

    def _end_job(self, job: Job, status: str, now: float, out: list[object]) -> None:
        job.status = status
        job.finished = now
        for att in [a for a in self.attempts.values() if a.job_id == job.id]:
            self._finish_attempt(att)
            out.append(Cancel(att.worker, att.id))
        for w in self.workers.values():
            if job.id in w.has_code:
                w.has_code.discard(job.id)
                out.append(DropJob(w.id, job.id))
        job.code = b""
        job.records = []
        self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        finished = [
            j for j in self.jobs.values() if j.outcome is not None and j.id not in self.waiting
        ]
        for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.jobs[job.id]

    def _fail_job(self, job: Job, now: float, out: list[object], error: dict[str, str]) -> None:
        self._end_job(job, FAILED, now, out)
        job.outcome = SendJobFailed(job.client, job.id, error)

    def _succeed_job(self, job: Job, now: float, out: list[object]) -> None:
        counters: dict[str, int] = {}
        for task in itertools.chain(job.maps, job.reduces):
            for name, n in task.info.get("counters", {}).items():
                counters[name] = counters.get(name, 0) + n
        output_dir = job.spec.get("output_dir")
        blobs = [t.result or b"" for t in job.reduces]
        returned = (
            all(t.result is not None for t in job.reduces)
            and sum(len(b) for b in blobs) <= self.settings.result_limit
        )
        if not returned and output_dir is None:
            self._fail_job(
                job,
                now,
                out,
                {
                    "type": "ResultTooLarge",
                    "traceback": "",
                    "message": f"the results exceed the {self.settings.result_limit}-byte limit "
                    "for results returned through the master; set output_dir",
                },
            )
            return
        summary = {
            "counters": counters,
            "stats": self.job_stats(job, now),
            "output_files": [t.info.get("output_file") for t in job.reduces] if output_dir else [],
            "returned": returned,
        }
        self._end_job(job, SUCCEEDED, now, out)
        job.outcome = SendResult(job.client, job.id, summary, blobs if returned else [])

    def job_stats(self, job: Job, now: float) -> dict[str, Any]:
        end = job.finished if job.finished is not None else now
        start = job.started if job.started is not None else end
        maps_end = job.maps_done_at if job.maps_done_at is not None else end
        stats: dict[str, Any] = dict(job.stats)
        stats.update(
            maps=len(job.maps),
            reduces=len(job.reduces),
            queued_seconds=start - job.submitted,
            map_seconds=maps_end - start,
            reduce_seconds=end - maps_end,
            total_seconds=end - job.submitted,
            shuffle_bytes=sum(sum(t.output["sizes"]) for t in job.maps if t.output),
            reexecutions=job.stats["reexecuted_maps"]
            + job.stats["failed_attempts"]
            + job.stats["lost_attempts"],
        )
        return stats

    # -- views -------------------------------------------------------------------------

    def progress(self, job: Job, now: float) -> dict[str, Any]:
        return {
            "state": job.status,
            "maps": len(job.maps),
            "maps_done": sum(t.status == DONE for t in job.maps),
            "reduces": len(job.reduces),
            "reduces_done": sum(t.status == DONE for t in job.reduces),
            "running": sum(len(t.running) for t in itertools.chain(job.maps, job.reduces)),
            "elapsed": now - job.submitted,
        }

    def status(self, now: float) -> dict[str, Any]:
        return {
            "workers": [
                {
                    "id": w.id.decode(errors="replace"),
                    "host": w.host,
                    "pid": w.pid,
                    "slots": w.slots,
                    "running": len(w.running),
                    "last_heartbeat": round(now - w.last_seen, 3),
                    "shuffle": w.shuffle,
                }
                for w in self.workers.values()
            ],
            "jobs": [
                {"id": j.id, "name": j.spec.get("name", ""), **self.progress(j, now)}
                for j in self.jobs.values()
            ],
        }

    # -- scheduling ----------------------------------------------------------------------

    def _location(self, job: Job, task: Task) -> dict[str, Any]:
        assert task.output is not None
        return {
            "map_task": task.index,
            "attempt": task.output["attempt"],
            "address": task.output["address"],
            "size": task.output["sizes"],
            "groups": task.output["groups"],
        }

    def _pick_worker(self, job: Job, task: Task) -> Worker | None:
        busy = {self.attempts[a].worker for a in task.running}
        candidates = [w for w in self.workers.values() if w.free > 0 and w.id not in busy]
        if task.lost_on is not None and any(w.id != task.lost_on for w in candidates):
            candidates = [w for w in candidates if w.id != task.lost_on]
        allowed = [w for w in candidates if w.id not in job.excluded]
        if not allowed:
            usable = [w for w in self.workers.values() if w.id not in job.excluded]
            if usable:
                return None  # a non-excluded worker exists; wait for it
            allowed = candidates
        if not allowed:
            return None
        return max(allowed, key=lambda w: (w.free, job.id in w.has_code))

    def _assign(
        self, job: Job, task: Task, w: Worker, now: float, out: list[object], backup: bool = False
    ) -> None:
        attempt_id = next(self._ids)
        att = Attempt(attempt_id, job.id, task.kind, task.index, w.id, now, backup=backup)
        self.attempts[attempt_id] = att
        w.running.add(attempt_id)
        task.running.append(attempt_id)
        task.status = RUNNING
        task.attempts += 1
        job.stats[f"{task.kind}_attempts"] += 1
        if backup:
            job.stats["backups_launched"] += 1
        if job.status == QUEUED:
            job.status = ACTIVE
            job.started = now
        spec: dict[str, Any] = {
            "name": job.spec.get("name", ""),
            "num_reducers": job.num_reducers,
            "num_maps": len(job.maps),
            "output_dir": job.spec.get("output_dir"),
            "has_combiner": bool(job.spec.get("has_combiner")),
            "result_limit": self.settings.result_limit,
        }
        records = None
        if task.kind == MAP:
            split = job.spec["splits"][task.index]
            spec["split"] = split
            if split["kind"] == "records":
                records = job.records[split["blob"]]
            if job.spec.get("skip_bad_records"):
                spec["skip"] = sorted(
                    r for r, n in task.bad_records.items() if n >= BAD_RECORD_FAILURES
                )
        else:
            spec["partition"] = task.index
            spec["locations"] = [self._location(job, m) for m in job.maps]
        code = None
        if job.id not in w.has_code:
            code = job.code
            w.has_code.add(job.id)
        out.append(Assign(w.id, attempt_id, job.id, task.kind, task.index, spec, code, records))

    def _schedule(self, now: float, out: list[object]) -> None:
        if not any(w.free > 0 for w in self.workers.values()) and not any(
            a.kind == REDUCE for a in self.attempts.values()
        ):
            return  # nothing to assign, and no reducer that could be holding a slot
        for job in self._active_jobs():
            kinds = [MAP, REDUCE] if job.maps_complete() else [MAP]
            for kind in kinds:
                for task in job.tasks(kind):
                    if task.status != IDLE:
                        continue
                    w = self._pick_worker(job, task)
                    if w is None and kind == MAP:
                        w = self._preempt_reducer(job, task, out)
                    if w is None:
                        break
                    self._assign(job, task, w, now, out)
        for job in self._active_jobs():
            if job.spec.get("speculative", True):
                self._speculate(job, now, out)

    def _preempt_reducer(self, job: Job, task: Task, out: list[object]) -> Worker | None:
        """Free a slot for a map that must run again by stopping one of the job's reducers.

        Reducers waiting for this very map output could otherwise hold every
        slot and wait forever. The newest reduce attempt goes; it is not a
        failure, and the reduce runs again once every map output exists.
        """
        reducers = [a for a in self.attempts.values() if a.job_id == job.id and a.kind == REDUCE]
        for att in sorted(reducers, key=lambda a: -a.start):
            if att.worker == task.lost_on and len(reducers) > 1:
                continue
            _, rtask = self._finish_attempt(att)
            out.append(Cancel(att.worker, att.id))
            job.stats["preempted_reduces"] += 1
            if rtask.status == RUNNING and not rtask.running:
                rtask.status = IDLE
            return self._pick_worker(job, task)
        return None

    def _speculate(self, job: Job, now: float, out: list[object]) -> None:
        kind = REDUCE if job.maps_complete() else MAP
        tasks = job.tasks(kind)
        if any(t.status == IDLE for t in tasks):
            return
        done = [t.duration for t in tasks if t.status == DONE]
        if not done:
            return
        typical = statistics.median(done)
        for task in tasks:
            if task.status != RUNNING or len(task.running) != 1:
                continue
            att = self.attempts[task.running[0]]
            elapsed = now - att.start
            if elapsed < max(typical, self.settings.speculation_min_seconds):
                continue
            # A fresh attempt would need about `typical`; back this one up only if
            # it will need far longer. Its progress rate says how long (LATE);
            # without progress (one long record, a paused worker) only a run of
            # several typical task times marks it as a straggler.
            if att.progress > 0:
                slow = (1.0 - att.progress) * elapsed / att.progress > 2 * typical
            else:
                slow = elapsed > 3 * typical
            if not slow:
                continue
            w = self._pick_worker(job, task)
            if w is None:
                return
            self._assign(job, task, w, now, out, backup=True)
