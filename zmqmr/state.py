"""MasterState: the master's pure state machine, and nothing else.

Rule 1: everything that decides what the cluster does lives here and in the
pure modules it is split into by idea: ``scheduling.py`` (which task goes
where and when: placement, preemption, timeouts, backups), ``policy.py`` (the
small decisions scheduling makes), ``outcomes.py`` (how a job ends, commits,
and reaches its client), ``recovery.py`` (reading the journal back) and
``views.py`` (what clients are shown). ``MasterState.handle(event, now)`` takes
one event of ``zmqmr.events`` and returns the commands the shell must carry
out; it is the only way in. None of these modules imports ``zmq`` or ``time``:
the clock is passed in, so unit tests drive it with a fake one and assert on
the commands.

The rules, after DESIGN.md §3 and the MapReduce paper:

* Liveness: any message from a worker counts as a heartbeat. A worker silent
  for ``worker_timeout`` is dead; its running attempts and its completed map
  tasks (their output lived on its disk) go back to idle. Completed reduce
  tasks stay done. Worker losses never count against a task's ``max_attempts``.
* Fencing: every attempt has an id; a completion from an attempt that is not
  running any more (its worker was declared dead, it lost to a backup, it was
  cancelled) is ignored. A message from a worker we do not know gets
  RECONNECT: it must register again as a new incarnation. A worker that sends
  anything malformed is dropped the same way.
* User failures (an exception, a crashed executor, a timeout) fail the attempt;
  the task is retried until ``max_attempts`` attempts failed, then the job
  fails with the user's error. A worker on which ``worker_job_failures``
  attempts of a job failed (or stalled) gets no more of its tasks, unless no
  other worker is left.
* Fetch failures: one report marks that map output lost, because the reducer
  has already retried it with timeouts, and a checksum failure or a missing
  file does not heal by asking again. The map runs again (elsewhere when it
  can), and every running reducer of the job is told the new location.
* Placement (``scheduling``): attempts go to the least loaded worker
  (``policy.LoadIndex``); claimed slots are capped at ``max_worker_slots``.
  Jobs run in order of arrival: free slots go to the oldest job with idle work.
* Backups: when a phase has no idle task left and a slot is free, each running
  attempt that ``policy.straggler`` names gets one backup on another worker;
  the first to finish wins and the others are cancelled.
* Reduce tasks start when every map task of their job has completed. If a map
  output is lost while reducers run and no slot is free for the map, the
  newest reducer of that job is preempted (not a failure).
* Output commit (``zmqmr.commit``): the first reduce attempt of a partition
  whose completion is accepted is the one approved to commit it; every other
  attempt is fenced by the rule above and its file is never moved. With an
  ``output_dir``, a job whose reduces are all done is "committing": the shell
  is told CommitJob with the approved attempts and answers JobCommitted; only
  then has the job succeeded. A failed or cancelled job's outcome waits for
  AbortJob (its ``_temporary`` removed) and JobAborted. One job at a time may
  use an ``output_dir``: a second is rejected at submit. A cancel that comes
  once the commit has begun is too late: the job commits.

The policy modules change the tables through a small named interface of
MasterState: ``set_status`` (the one place a task's status changes),
``end_attempt``, ``attempt_failed``, ``new_id``, ``note`` and ``persist``,
with ``clock`` (the time of the event being handled) and ``dirty`` (something
may be placeable). Its ``_on_*`` handlers are its own.

Cost: every event costs O(1) or O(log n) in tasks and workers (plus the
messages it produces): counts of done tasks, idle queues per phase, a heap of
workers with room, workers ordered by when they were last heard from, and a
per-partition index of non-empty map-output segments. Only the clock's Tick
looks at running attempts (timeouts, speculation), never at every task.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from typing import Any, NoReturn

from . import outcomes, policy, recovery, scheduling, views
from .config import ClusterSettings
from .events import (
    AbortJob,
    AckJob,
    AttemptDone,
    AttemptFailed,
    Cancel,
    CancelJob,
    Command,
    DropJob,
    Event,
    FetchFailed,
    JobAborted,
    JobAccepted,
    JobCommitted,
    JobInfoRequest,
    JobRejected,
    JobSubmitted,
    LogsArrived,
    LogsRequest,
    Note,
    Persist,
    PollJob,
    Recovered,
    Relocate,
    Replayed,
    Reregister,
    SendJobFailed,
    SendJobInfo,
    SendProgress,
    SendStatus,
    Shutdown,
    StatusRequest,
    Tick,
    Welcome,
    WorkerLeft,
    WorkerMisbehaved,
    WorkerReady,
    WorkerSeen,
)
from .journal import Entry
from .observe import Observer
from .protocol import (
    ClusterStatus,
    ErrorInfo,
    JobDetail,
    JobProgress,
    JobStatus,
    Report,
)
from .tables import (
    COMMITTING,
    DONE,
    FAILED,
    IDLE,
    MAP,
    MAX_BAD_RECORDS,
    REDUCE,
    RUNNING,
    Attempt,
    Job,
    MapOutput,
    Task,
    Worker,
    add_counters,
)


def _unreachable(x: NoReturn) -> NoReturn:  # pragma: no cover - mypy proves it
    raise TypeError(f"unknown event {x!r}")


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


class MasterState:
    """Tasks, attempts, workers and jobs; ``handle`` is the only way in."""

    def __init__(self, settings: ClusterSettings | None = None, durable: bool = False) -> None:
        self.settings = settings or ClusterSettings()
        #: With a journal: durable facts become Persist commands, and jobs outlive a stop.
        self.durable = durable
        #: Ordered by when each was last heard from, so the silent ones come first.
        self.workers: OrderedDict[bytes, Worker] = OrderedDict()
        self.jobs: dict[str, Job] = {}  # in order of arrival
        self.active: dict[str, Job] = {}  # queued or running, in order of arrival
        #: Active jobs with reduce attempts running (an ordered set): where a map may
        #: preempt a reducer when no worker has room.
        self.reducing: dict[str, None] = {}
        self.finished: OrderedDict[str, Job] = OrderedDict()  # ended, not yet collected
        self.attempts: dict[int, Attempt] = {}
        #: Output dirs of jobs not yet ended (or still being aborted) -> the job's id.
        self.output_dirs: dict[str, str] = {}
        s = self.settings
        self.load = policy.LoadIndex(policy.max_queue_depth(s))
        #: Slots not running anything, over all workers.
        self.free_slots = 0
        #: Long polls: job id -> {poll id: client}, and a heap of (deadline, poll id, job id).
        self.polls: dict[str, dict[int, bytes]] = {}
        self.poll_deadlines: list[tuple[float, int, str]] = []
        self.last_id = 0  # attempt and poll ids: the last one given
        #: Results collected or expired lately: job id -> why it is gone (for a clear error).
        self.gone: OrderedDict[str, str] = OrderedDict()
        #: Recovered map outputs by the shuffle address that served them.
        self.waiting: dict[str, dict[tuple[str, int], None]] = {}
        self.claim_deadline: float | None = None
        self.dirty = False  # something may be placeable: run the scheduler
        self._stimulus = ""
        self._settle_stimulus = ""  # the event that first made work placeable since a pass
        self.clock = 0.0  # the clock of the event being handled
        #: Timelines, failures, lost workers and finished jobs, for people to look at.
        self.observe = Observer(self.settings.history_jobs)

    # -- entry point ----------------------------------------------------------

    def handle(self, event: Event, now: float, schedule: bool = True) -> list[Command]:
        """Take one event at ``now``; return the commands it causes, in order. Each case
        changes the tables; then, if that may have made room or work, free slots go to
        idle tasks (``scheduling.schedule``). With ``schedule`` false that waits for
        ``settle``: the parts of one message from a worker are taken one by one, and
        the slots they free are filled together after the last."""
        out: list[Command] = []
        self._stimulus = getattr(event, "stimulus", "")
        self.clock = now
        match event:
            # a worker's messages (the commonest first: cases are tried in order)
            case AttemptDone():
                self._on_done(event, now, out)
            case WorkerSeen():
                self._on_seen(event, now, out)
            case WorkerReady():
                self._on_ready(event, now, out)
            case WorkerLeft():
                w = self.workers.get(event.worker)
                if w is not None:
                    self._lose_worker(w, now, out, "it said goodbye")
            case WorkerMisbehaved():
                self._on_misbehaved(event, now, out)
            case AttemptFailed():
                self._on_failed(event, now, out)
            case FetchFailed():
                self._on_fetch_failed(event, now, out)
            case LogsArrived():
                if self._known(event.worker, now, out) is not None:
                    out.extend(
                        self.observe.logs_arrived(
                            event.worker, event.request, event.job_id, event.logs, event.more
                        )
                    )
            # a client's requests
            case JobSubmitted():
                self._on_submitted(event, now, out)
            case PollJob():
                outcomes.on_poll(self, event, now, out)
            case AckJob():
                job = self.finished.get(event.job_id)
                if job is not None:
                    outcomes.forget(self, job, out, "collected")
            case CancelJob():
                outcomes.on_cancel(self, event, now, out)
            case StatusRequest():
                out.append(SendStatus(event.client, self.status(now)))
            case JobInfoRequest():
                out.append(SendJobInfo(event.client, event.job_id, self.detail(event.job_id, now)))
            case LogsRequest():
                workers = list(self.workers.values())
                request = self.new_id()
                out.extend(
                    self.observe.ask_logs(
                        request, event.client, event.job_id, event.kind, event.task, workers, now
                    )
                )
            # the shell: the clock, the output commit, the journal, a stop
            case Tick():
                self._on_tick(now, out)
            case JobCommitted():
                outcomes.on_committed(self, event, now, out)
            case JobAborted():
                outcomes.on_aborted(self, event, now, out)
            case Replayed():
                recovery.replay(self, event.entry, now, out)
            case Recovered():
                recovery.resume(self, now, out)
            case Shutdown():
                self._on_shutdown(now, out)
            case _:
                _unreachable(event)
        if self.dirty and schedule:
            scheduling.schedule(self, now, out)
        elif self.dirty and not self._settle_stimulus:
            self._settle_stimulus = self._stimulus
        for cmd in out:
            if not cmd.stimulus:
                cmd.stimulus = self._stimulus
        return out

    def settle(self, now: float) -> list[Command]:
        """The assignments that events taken with ``schedule=False`` made possible
        (their stimulus: the first of those events that made room or work)."""
        out: list[Command] = []
        if self.dirty:
            self.clock = now
            scheduling.schedule(self, now, out)
            for cmd in out:
                cmd.stimulus = self._settle_stimulus or self._stimulus
        self._settle_stimulus = ""
        return out

    def new_id(self) -> int:
        self.last_id += 1
        return self.last_id

    def skip_ids(self, used: int) -> None:
        """Ids up to ``used`` were given by an earlier master: never give them again."""
        self.last_id = max(self.last_id, used)

    def wake_at(self) -> float | None:
        """When the next long poll or log request falls due, if one waits: a Tick then."""
        due = [d for d in (self.observe.wake_at(),) if d is not None]
        if self.poll_deadlines:
            due.append(self.poll_deadlines[0][0])
        return min(due) if due else None

    def note(self, out: list[Command], what: str, reason: str = "") -> None:
        """Say why: a decision for the master's log, with the event's stimulus id."""
        out.append(Note(what, reason=reason))

    def persist(
        self, out: list[Command], kind: str, blobs: list[bytes] | None = None, /, **f: Any
    ) -> None:
        """Journal a durable fact (with a state dir): the shell writes it before what follows."""
        if self.durable:
            out.append(Persist(Entry(kind, f, blobs or [])))

    # -- workers --------------------------------------------------------------

    def _known(self, worker: bytes, now: float, out: list[Command]) -> Worker | None:
        w = self.workers.get(worker)
        if w is None:
            out.append(Reregister(worker, reason="this worker is not registered"))
            return None
        w.last_seen = now
        self.workers.move_to_end(worker)
        return w

    def _on_ready(self, ev: WorkerReady, now: float, out: list[Command]) -> None:
        old = self.workers.get(ev.worker)
        if old is not None:
            self._lose_worker(old, now, out, "it registered again as a new incarnation")
        slots = min(ev.slots, self.settings.max_worker_slots)
        w = Worker(ev.worker, slots, ev.shuffle, ev.host, ev.pid, now, now)
        self.workers[w.id] = w
        self.free_slots += slots
        self.load.update(w)
        self.dirty = True
        capped = f" (it claimed {ev.slots}; max_worker_slots)" if slots < ev.slots else ""
        self.note(out, f"worker {w.name} joined with {slots} slots{capped}", "READY")
        out.append(Welcome(w.id))
        if self.waiting:
            recovery.claim(self, w, ev.held, now, out)
        ended = []
        for job_id in sorted({h.job for h in ev.held}):
            if job_id in self.active:  # outputs of an earlier incarnation: dropped at its end
                self.active[job_id].holders.add(w.id)
            else:
                ended.append(job_id)
                out.append(DropJob(w.id, job_id, reason="it holds files of an ended job"))
        if ended:
            self.note(out, f"worker {w.name} holds files of ended jobs {', '.join(ended)}", "READY")

    def _on_seen(self, ev: WorkerSeen, now: float, out: list[Command]) -> None:
        w = self._known(ev.worker, now, out)
        if w is None:
            return
        for p in ev.progress:
            att = w.running.get(p.attempt)
            if att is None:
                continue
            if att.began is None:
                att.began = now
                self.observe.began(att, now)
            if p.fraction > att.progress:
                att.progress = p.fraction
                w.last_activity = now
                if att.kind == REDUCE and p.fraction >= 0.5:  # its input is fetched
                    self.observe.shuffled(att, now)
        if w.running and len(ev.progress) < w.slots:
            scheduling.missing_attempts(self, w, ev.seen, now, out)

    def _on_misbehaved(self, ev: WorkerMisbehaved, now: float, out: list[Command]) -> None:
        w = self.workers.get(ev.worker)
        if w is not None:
            self._lose_worker(w, now, out, f"it sent a malformed message: {ev.problem}")
        out.append(Reregister(ev.worker, reason=f"malformed message: {ev.problem}"))

    def _lose_worker(self, w: Worker, now: float, out: list[Command], why: str) -> None:
        """Forget a worker: its attempts and its map outputs are gone with it."""
        del self.workers[w.id]
        self.load.remove(w.id)
        self.free_slots -= max(0, w.slots - w.load)
        lost = len(w.running)
        self.observe.worker_lost(w, now, why)
        for att in list(w.running.values()):
            att.job.stats["lost_attempts"] += 1
            self.end_attempt(att, outcome="lost", error=f"worker {w.name} lost: {why}")
        outputs = sorted(w.outputs)
        for job_id, index in outputs:
            job = self.jobs[job_id]
            self._map_output_lost(job, job.maps[index], out, f"its output was on worker {w.name}")
        for job in self.active.values():
            job.excluded.discard(w.id)
        self.note(
            out,
            f"worker {w.name} is gone: {lost} running attempts and {len(outputs)} map outputs lost",
            why,
        )

    # -- task status: the one place it changes ---------------------------------------

    def set_status(self, job: Job, task: Task, status: str) -> None:
        """The one place a task's status changes: keeps the done counts and idle queues."""
        was = task.status
        if was == status:
            return
        if was == DONE:
            job.done[task.kind] -= 1
        task.status = status
        if status == DONE:
            job.done[task.kind] += 1
        elif status == IDLE:
            if task.attempts:  # retries and re-executions go before tasks never run
                job.idle[task.kind].appendleft(task)
            else:
                job.idle[task.kind].append(task)
            self.dirty = True

    def end_attempt(
        self, att: Attempt, requeue: bool = True, outcome: str = "cancelled", error: str = ""
    ) -> None:
        """Take a running attempt off every table; its task goes idle if nothing else
        runs it (unless ``requeue`` is false: the attempt has just completed it).
        ``outcome`` and ``error`` are for its timeline entry."""
        del self.attempts[att.id]
        self.observe.ended(att, self.clock, outcome, error)
        job, task, w = att.job, att.task, att.worker
        del job.running[att.id]
        job.n_running[task.kind] -= 1
        if task.kind == REDUCE and not job.n_running[REDUCE]:
            self.reducing.pop(job.id, None)
        task.running.remove(att)
        if w.running.pop(att.id, None) is not None and w.id in self.workers:
            if w.load < w.slots:
                self.free_slots += 1
            self.load.update(w)
            self.dirty = True
        if requeue and task.status == RUNNING and not task.running:
            self.set_status(job, task, IDLE)

    def _map_output_lost(self, job: Job, task: Task, out: list[Command], why: str) -> None:
        output = task.output
        assert output is not None
        w = self.workers.get(output.worker)
        if w is not None:
            w.outputs.discard((job.id, task.index))
        task.lost_on = output.worker
        task.output = None
        for seg in output.segments:
            job.segments[seg.partition].pop(task.index, None)
            job.shuffle_bytes -= seg.size
        if task.report is not None:
            add_counters(job.counters, task.report.counters, -1)
            task.report = None
        job.stats["reexecuted_maps"] += 1
        job.maps_done_at = None
        self.persist(out, "lost", job=job.id, task=task.index)
        self.set_status(job, task, RUNNING if task.running else IDLE)
        self.note(out, f"job {job.id}: map task {task.index} will run again", why)

    # -- attempts ----------------------------------------------------------------

    def _current(
        self, worker: bytes, attempt_id: int, now: float, out: list[Command]
    ) -> Attempt | None:
        w = self._known(worker, now, out)
        if w is None:
            return None
        return w.running.get(attempt_id)  # None: fenced (lost, cancelled, or beaten)

    def _on_done(self, ev: AttemptDone, now: float, out: list[Command]) -> None:
        att = self._current(ev.worker, ev.attempt, now, out)
        if att is None:
            return
        job, task, w = att.job, att.task, att.worker
        report = ev.report
        if task.kind == MAP:
            partitions = len(job.reduces)
            for seg in report.segments:
                if seg.partition >= partitions:
                    error = ErrorInfo("ProtocolError", "map segments name unknown partitions")
                    self.attempt_failed(att, now, out, error)
                    return
        self.end_attempt(att, requeue=False, outcome="done")
        w.last_activity = now
        task.report = report
        task.duration = now - att.start
        if task.kind == MAP:
            if self.durable:  # the report's JSON is made only for a journal
                self.persist(
                    out,
                    "map",
                    job=job.id,
                    task=task.index,
                    attempt=att.id,
                    shuffle=w.shuffle,
                    report=report.to_json(),
                )
            self.attach_output(job, task, w, att.id, report)
        else:
            task.result = ev.result
            task.approved = att.id  # the one attempt whose file the job commit moves
            if self.durable:
                self.persist(
                    out,
                    "reduce",
                    [] if ev.result is None else [ev.result],
                    job=job.id,
                    task=task.index,
                    attempt=att.id,
                    report=report.to_json(),
                    result=ev.result is not None,
                )
        add_counters(job.counters, report.counters, 1)
        job.durations[task.kind].add(task.duration)
        if report.seconds is not None:
            job.run_seconds[task.kind].add(report.seconds)
            if policy.is_long(min(report.seconds, task.duration), self.settings):
                job.long_seen[task.kind] = True
        self.set_status(job, task, DONE)
        for loser in list(task.running):  # the losers of a backup race
            self.end_attempt(loser)
            out.append(Cancel(loser.worker.id, loser.id, reason=f"attempt {att.id} won"))
            if loser.backup:
                job.stats["backups_cancelled"] += 1
        if att.backup:
            job.stats["backups_won"] += 1
            self.note(out, f"job {job.id}: the backup of {task.name} won", f"attempt {att.id}")
        if task.kind == MAP:
            self.map_done(job, task, now, out)
        elif job.spec.output_dir is None and report.too_big:
            limit, what = self.settings.result_limit, f"the results of partition {task.index}"
            outcomes.fail_job(self, job, now, out, outcomes.too_big(limit, what))
        elif job.done[REDUCE] == len(job.reduces):
            outcomes.succeed_job(self, job, now, out)

    def attach_output(self, job: Job, task: Task, w: Worker, attempt: int, report: Report) -> None:
        """``task``'s output is attempt ``attempt`` on ``w``'s disk."""
        task.output = MapOutput(w.id, attempt, w.shuffle, report.segments)
        w.outputs.add((job.id, task.index))
        for seg in report.segments:
            job.segments[seg.partition][task.index] = seg
            job.shuffle_bytes += seg.size

    def map_done(self, job: Job, task: Task, now: float, out: list[Command]) -> None:
        if task.lost_on is not None:  # a re-execution: reducers may be waiting for it
            for att in job.running.values():
                if att.kind == REDUCE:
                    loc = scheduling.location(job, task, att.task.index)
                    out.append(Relocate(att.worker.id, att.id, loc, reason="re-executed map"))
            task.lost_on = None
        if job.maps_complete and job.maps_done_at is None:
            job.maps_done_at = now
            self.note(out, f"job {job.id}: every map task is done; reduces start")
            self.dirty = True

    def _on_failed(self, ev: AttemptFailed, now: float, out: list[Command]) -> None:
        att = self._current(ev.worker, ev.attempt, now, out)
        if att is None:
            return
        if ev.kind == "lost":  # not the user's fault: the worker lost the job's code
            att.job.stats["lost_attempts"] += 1
            att.worker.has_code.discard(att.job.id)
            self.end_attempt(att, outcome="lost", error=ev.error.message)
            return
        self.attempt_failed(att, now, out, ev.error, ev.record)

    def attempt_failed(
        self,
        att: Attempt,
        now: float,
        out: list[Command],
        error: ErrorInfo,
        record: int | None = None,
    ) -> None:
        """A running attempt failed by the user's doing (an error, a crash, a timeout):
        end it, strike its worker, retry its task or fail the job."""
        job, task, w = att.job, att.task, att.worker
        task.failures += 1
        self.end_attempt(att, outcome="failed", error=f"{error.type}: {error.message}")
        self.observe.failed(
            job,
            ErrorInfo.make(
                error.type,
                f"{task.name}, attempt {att.id} on {w.name}: {error.message}",
                error.traceback,
                task=task.name,
                user_message=error.message,
                log=error.log,
            ),
        )
        w.last_activity = now
        job.stats["failed_attempts"] += 1
        if record is not None and task.kind == MAP:
            task.bad_records[record] = task.bad_records.get(record, 0) + 1
        scheduling.strike(self, job, w, out, f"{task.name} failed there: {error.type}")
        if task.status == DONE:
            return
        if task.failures >= job.spec.max_attempts and not self._skipping_helps(job, task):
            past = len(task.bad_records) > MAX_BAD_RECORDS and job.spec.skip_bad_records
            why = f" (more than the {MAX_BAD_RECORDS} bad records a task may skip)" if past else ""
            failed = ErrorInfo(
                error.type,
                f"{task.name} failed {_times(task.failures)}{why}; "
                f"last error: {error.type}: {error.message}",
                error.traceback,
                task=task.name,
                user_message=error.message,
                log=error.log,
            )
            outcomes.fail_job(self, job, now, out, failed)
            return
        self.note(out, f"job {job.id}: {task.name} will be retried", f"{error.type} on {w.name}")

    def _skipping_helps(self, job: Job, task: Task) -> bool:
        """With skip_bad_records, failures pinned on one record do not exhaust the task."""
        if not job.spec.skip_bad_records or task.kind != MAP:
            return False
        pinned = sum(task.bad_records.values())
        return (
            task.failures - pinned < job.spec.max_attempts
            and len(task.bad_records) <= MAX_BAD_RECORDS
        )

    def _on_fetch_failed(self, ev: FetchFailed, now: float, out: list[Command]) -> None:
        att = self._current(ev.worker, ev.attempt, now, out)
        if att is None or att.kind != REDUCE:
            return
        job = att.job
        if not ev.map_task < len(job.maps):
            return
        job.stats["fetch_failures"] += 1
        task = job.maps[ev.map_task]
        if task.status != DONE or task.output is None:
            return  # running again already; the reducer hears when it is done
        if task.output.attempt == ev.map_attempt:
            self._map_output_lost(job, task, out, f"a reducer could not fetch it: {ev.reason}")
        else:  # the reducer has an old location: tell it the current one
            loc = scheduling.location(job, task, att.task.index)
            out.append(Relocate(att.worker.id, att.id, loc, reason="the reducer asked an old one"))

    # -- the clock ----------------------------------------------------------------

    def _on_tick(self, now: float, out: list[Command]) -> None:
        timeout = self.settings.worker_timeout
        while self.workers:
            w = next(iter(self.workers.values()))
            if now - w.last_seen <= timeout:
                break
            self._lose_worker(w, now, out, f"silent for {now - w.last_seen:.1f}s")
        for job in list(self.active.values()):
            scheduling.check_timeouts(self, job, now, out)
            scheduling.notice_long_tasks(self, job, now)
        for job in list(self.active.values()):
            scheduling.speculate(self, job, now, out)
        if self.claim_deadline is not None and now >= self.claim_deadline:
            recovery.release_all(self, out)
        ttl = self.settings.result_ttl
        while self.finished:
            oldest = next(iter(self.finished.values()))
            if oldest.finished is None or now - oldest.finished <= ttl:
                break
            outcomes.forget(self, oldest, out, "expired")
        heap = self.poll_deadlines
        while heap and heap[0][0] <= now:
            _, poll_id, job_id = heapq.heappop(heap)
            client = self.polls.get(job_id, {}).pop(poll_id, None)
            if client is not None:
                out.append(SendProgress(client, job_id, self.progress(self.jobs[job_id], now)))
        out.extend(self.observe.logs_due(now))

    # -- jobs -------------------------------------------------------------------

    def _on_submitted(self, ev: JobSubmitted, now: float, out: list[Command]) -> None:
        known = self.jobs.get(ev.job_id)
        if known is not None and known.spec == ev.spec:  # sent again: its ACCEPTED was lost
            out.append(JobAccepted(ev.client, ev.job_id, reason="the same job, submitted again"))
            return
        if known is not None or ev.job_id in self.gone:
            error = ErrorInfo("JobSubmitError", f"job id {ev.job_id} is already in use")
            out.append(JobRejected(ev.client, ev.job_id, error, reason="duplicate id"))
            return
        spec = ev.spec
        if spec.output_dir is not None:
            spec.output_dir = _normalized(spec.output_dir)
            other = self.output_dirs.get(spec.output_dir)
            if other is not None:
                error = ErrorInfo(
                    "JobSubmitError",
                    f"output_dir {spec.output_dir} is in use by job {other}, which has not "
                    "ended; two running jobs cannot share an output_dir",
                )
                out.append(JobRejected(ev.client, ev.job_id, error, reason="output_dir in use"))
                return
        maps = [Task(MAP, i) for i in range(len(spec.splits))]
        reduces = [Task(REDUCE, r) for r in range(spec.num_reducers)]
        job = Job(ev.job_id, ev.client, spec, ev.code, ev.records, maps, reduces, now)
        job.idle = {MAP: deque(maps), REDUCE: deque(reduces)}
        job.durations = {MAP: policy.RunningMedian(), REDUCE: policy.RunningMedian()}
        job.segments = [{} for _ in reduces]
        self.jobs[job.id] = self.active[job.id] = job
        self.observe.submitted(job)
        if spec.output_dir is not None:
            self.output_dirs[spec.output_dir] = job.id
        self.dirty = True
        self.persist(out, "job", [ev.code, *ev.records], job=job.id, spec=spec.to_json())
        out.append(JobAccepted(ev.client, job.id))
        self.note(
            out, f"job {job.id} ({spec.name}) accepted: {len(maps)} maps, {len(reduces)} reduces"
        )

    def _on_shutdown(self, now: float, out: list[Command]) -> None:
        for job in [] if self.durable else list(self.active.values()):  # else: they resume
            message = f"the master stopped while job {job.id} was running; submit it again"
            committing = job.status == COMMITTING  # an abort now would race the commit
            outcomes.end_job(self, job, FAILED, now, out, "the master is stopping")
            job.outcome = SendJobFailed(job.client, job.id, ErrorInfo("MasterShutdown", message))
            out.append(job.outcome)  # pushed: the client need not poll for it
            if job.spec.output_dir is not None and not committing:
                out.append(AbortJob(job.id, job.spec.output_dir, reason="the master is stopping"))
        for w in self.workers.values():
            out.append(Reregister(w.id, reason="the master is stopping"))
        self.workers.clear()

    # -- views (zmqmr.views) -------------------------------------------------------------

    def job_stats(self, job: Job, now: float) -> dict[str, float]:
        return views.job_stats(job, now)

    def progress(self, job: Job, now: float) -> JobProgress:
        return views.job_progress(job, now, len(self.workers))

    def status(self, now: float) -> ClusterStatus:
        return views.cluster_status(self, now)

    def job_status(self, job: Job, now: float) -> JobStatus:
        return views.job_status(self, job, now)

    def detail(self, job_id: str, now: float) -> JobDetail | None:
        """One job in detail (``zmqmr status JOB``): held by the master or remembered."""
        return views.job_detail(self, job_id, now)


def _normalized(path: str) -> str:
    """One spelling of a path (the client sends it absolute): no ``//``, ``/./`` or end slash."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return ("/" if path.startswith("/") else "") + "/".join(parts)


__all__ = ["MasterState", "Job", "Task", "Attempt", "Worker"]
