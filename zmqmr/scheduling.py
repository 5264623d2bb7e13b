"""Scheduling: which task goes where, and when. Part of the master's pure state machine.

``MasterState`` (state.py) handles the events and keeps the tables; when an
event may have made something placeable it calls ``schedule``, and on every
Tick ``check_timeouts`` and ``speculate``. What is decided here:

* Order: jobs in order of arrival; within a job, the map phase's idle tasks
  (re-executions and retries first), then, once every map is done, the reduces.
* Placement (``place``): the least loaded worker (``policy.LoadIndex``), never
  one already running the task nor one excluded from the job (unless every
  worker is), away from the worker that lost the task's map output when
  another has room. An attempt may queue behind running ones only while the
  phase has more idle tasks than the cluster has free slots (deeper while the
  phase's tasks are small: ``policy.queue_depth``), and a re-executed map never
  queues: reducers wait for it.
* Preemption (``preempt_reducer``): a map that must run again and finds no
  slot stops the job's newest reducer (not a failure).
* Timeouts (``check_timeouts``): an attempt running past the job's
  ``task_timeout`` fails.
* Speculation (``speculate``): when a phase has no idle task and a slot is
  free, each lone running attempt that ``policy.straggler`` names gets one
  backup on another worker; a worker silent meanwhile gets a strike.
* Exclusion (``strike``): a worker on which ``worker_job_failures`` attempts of
  a job failed or stalled gets no more of its tasks.

The functions that change the tables take the state as their first argument
and work through its named interface (state.py says which), as ``recovery.py``
does; a task's status still changes only in ``MasterState.set_status``. ``location``, ``task_spec``,
``may_queue`` and ``typical_time`` are pure. Like state.py: no ``zmq``, no
``time``. Imports: the standard library and zmqmr's policy, events, protocol
and tables modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import policy
from .events import Assign, Cancel, Command
from .protocol import ErrorInfo, Location, Locations, TaskSpec
from .tables import (
    ACTIVE,
    BAD_RECORD_FAILURES,
    IDLE,
    MAP,
    QUEUED,
    REDUCE,
    RUNNING,
    Attempt,
    Job,
    Task,
    Worker,
)

if TYPE_CHECKING:
    from .state import MasterState


# -- pure decisions ------------------------------------------------------------------


def location(job: Job, task: Task, partition: int) -> Location:
    """Where a reducer of ``partition`` finds map ``task``'s segment, and how big it is."""
    out = task.output
    assert out is not None
    seg = job.segments[partition].get(task.index)
    size, groups = (seg.size, seg.groups) if seg is not None else (0, 0)
    return Location(task.index, out.attempt, out.address, size, groups)


def locations(job: Job, partition: int) -> Locations:
    """The non-empty segments of ``partition``, one per map output with data for it."""
    out = Locations()
    addresses = out.addresses
    index: dict[str, int] = {}
    maps, attempts, servers = out.maps, out.attempts, out.servers
    sizes, groups = out.sizes, out.groups
    tasks = job.maps
    for m, seg in job.segments[partition].items():
        output = tasks[m].output
        assert output is not None
        server = index.get(output.address)
        if server is None:
            server = index[output.address] = len(addresses)
            addresses.append(output.address)
        maps.append(m)
        attempts.append(output.attempt)
        servers.append(server)
        sizes.append(seg.size)
        groups.append(seg.groups)
    return out


#: The locations of every map attempt's spec (it has none), shared: nothing in the
#: master changes a spec's locations in place (a reduce's spec gets its own), and a
#: new empty Locations is six lists, most of what building a map's spec costs.
_NO_LOCATIONS = Locations()


def task_spec(job: Job, task: Task, result_limit: int) -> tuple[TaskSpec, bytes | None]:
    """What an attempt of ``task`` is told about its work, and the records blob it needs."""
    spec = job.spec
    ts = TaskSpec(  # by position: name, num_reducers, num_maps, output_dir, ...
        spec.name,
        len(job.reduces),
        len(job.maps),
        spec.output_dir,
        spec.has_combiner,
        result_limit,
        None,  # split
        [],  # skip
        False,  # track_records
        None,  # partition
        _NO_LOCATIONS,  # a reduce's are set below
    )
    records = None
    if task.kind == MAP:
        split = ts.split = spec.splits[task.index]
        if split.kind == "records":
            assert split.blob is not None
            records = job.records[split.blob]
        if spec.skip_bad_records:
            ts.track_records = True
            ts.skip = sorted(r for r, n in task.bad_records.items() if n >= BAD_RECORD_FAILURES)
    else:
        ts.partition = task.index
        ts.locations = locations(job, task.index)
    return ts, records


def may_queue(task: Task, idle: int, free_slots: int) -> bool:
    """Whether ``task``'s attempt may wait in a worker's queue behind running ones.

    Only while there is more idle work than free slots (small tasks then never
    wait a round trip), and never a re-executed map: the reducers it would
    wait behind wait for it."""
    return task.lost_on is None and idle > free_slots


def typical_time(
    job: Job, kind: str, running: Sequence[tuple[Attempt, float]], now: float
) -> float | None:
    """The phase's typical task time: the median of its finished attempts' times on
    their workers (``Report.seconds``: the clock a straggler's elapsed time is measured
    on, from when its worker began it, not from when it was queued), else of the
    master's durations, or, before any finished, the median estimate from the progress
    of its ``running`` attempts."""
    typical = job.run_seconds[kind].median()
    if typical is None:
        typical = job.durations[kind].median()
    if typical is None:
        estimates = sorted((now - t) / a.progress for a, t in running if a.progress > 0)
        typical = estimates[len(estimates) // 2] if estimates else None
    return typical


_ATTEMPTS = {MAP: "map_attempts", REDUCE: "reduce_attempts"}


def rerun_reason(task: Task) -> str:
    return "retry" if task.failures else "re-execution" if task.lost_on else "idle task"


# -- placement -------------------------------------------------------------------------


def schedule(st: MasterState, now: float, out: list[Command]) -> None:
    """Give free slots to idle tasks, oldest job first.

    Jobs are visited only while some worker has room, and only up to the first job
    that has not started and cannot start now: every job after it is as new, wants
    what it wants (a map's slot, at the same queue depth), and so cannot start
    either. Started jobs come first (in order of arrival, a job starts only when
    those before it leave room), so an event costs O(started jobs), however many
    wait behind them. Then a job with reducers running may still place a map, by
    preempting one of them.
    """
    st.dirty = False
    deepest = policy.max_queue_depth(st.settings)
    if st.load.pick(None, deepest) is not None:
        for job in st.active.values():  # fill neither adds nor removes a job
            fill(st, job, now, out)
            if job.started is None or st.load.pick(None, deepest) is None:
                break
    for job_id in list(st.reducing):
        reducing = st.active.get(job_id)
        if reducing is not None and reducing.idle[MAP]:
            fill(st, reducing, now, out)


def fill(st: MasterState, job: Job, now: float, out: list[Command]) -> None:
    """Assign the job's idle tasks while workers have room for them."""
    s = st.settings
    depth: dict[str, int] = {}  # queued attempts per slot, by phase: once a pass
    idle = job.idle
    while not job.ended:
        kind = MAP if idle[MAP] else REDUCE if job.maps_complete else None
        if kind is None:
            return
        queue = idle[kind]
        if not queue:
            return
        task = queue[0]
        if task.status != IDLE:  # cannot happen: every push is a change to idle
            queue.popleft()
            continue
        if kind not in depth:
            depth[kind] = policy.queue_depth(s, job.run_seconds[kind], job.long_seen[kind])
        may = may_queue(task, len(queue), st.free_slots)
        w = place(st, job, task, queue=depth[kind] if may else 0)
        if w is None and kind == MAP and job.n_running[REDUCE]:
            w = preempt_reducer(st, job, task, out)
        if w is None:
            return
        queue.popleft()
        assign(st, job, task, w, now, out)


def place(st: MasterState, job: Job, task: Task, queue: int) -> Worker | None:
    """The worker for ``task``'s next attempt: not one already running it, nor one
    excluded from the job (unless every worker is), away from where its output
    was lost when another has room. ``queue``: how many queued attempts per slot
    a worker may hold with it (0: a free slot only)."""
    if not task.running and task.lost_on is None and not job.excluded:
        return st.load.pick(None, queue)  # type: ignore[return-value] # any worker will do
    return _place_among(st, job, task, queue)


def _place_among(st: MasterState, job: Job, task: Task, queue: int) -> Worker | None:
    """``place`` when some workers will not do (the checks are closures: not on the
    common path, where any worker will do)."""
    busy = {a.worker.id for a in task.running}
    excluded = job.excluded

    def ok(w: Any) -> bool:
        return w.id not in busy and w.id not in excluded and w.id != task.lost_on

    found = st.load.pick(ok, queue)
    if found is None and task.lost_on is not None:
        found = st.load.pick(lambda w: w.id not in busy and w.id not in excluded, queue)
    if found is None and excluded and len(excluded) >= len(st.workers):
        found = st.load.pick(lambda w: w.id not in busy, queue)
    return found  # type: ignore[return-value]


def assign(
    st: MasterState,
    job: Job,
    task: Task,
    w: Worker,
    now: float,
    out: list[Command],
    backup: bool = False,
    reason: str = "",
) -> None:
    """Start an attempt of ``task`` on ``w`` (on a free slot, or queued there)."""
    load, kind = len(w.running), task.kind  # w.load, before this attempt
    att = Attempt(st.new_id(), job, task, w, now, now if load < w.slots else None, backup)
    st.observe.started(att, now, not backup and task.attempts > 0)
    st.attempts[att.id] = job.running[att.id] = w.running[att.id] = att
    if load < w.slots:
        st.free_slots -= 1
    st.load.update(w)
    task.running.append(att)
    job.n_running[kind] += 1
    if kind == REDUCE:
        st.reducing[job.id] = None
    task.attempts += 1
    st.set_status(job, task, RUNNING)
    job.stats[_ATTEMPTS[kind]] += 1
    if st.durable:
        st.persist(out, "attempt", job=job.id, kind=task.kind, id=att.id)
    if backup:
        job.stats["backups_launched"] += 1
    if job.status == QUEUED:
        job.status = ACTIVE
        job.started = now
        st.note(out, f"job {job.id} started")
    ts, records = task_spec(job, task, st.settings.result_limit)
    code = None
    if job.id not in w.has_code:
        code = job.code
        w.has_code.add(job.id)
        job.holders.add(w.id)
    out.append(
        Assign(
            w.id,
            att.id,
            job.id,
            kind,
            task.index,
            ts,
            code,
            records,
            reason=reason or rerun_reason(task),
        )
    )


def preempt_reducer(st: MasterState, job: Job, task: Task, out: list[Command]) -> Worker | None:
    """Free a slot for a map that must run again by stopping one of the job's reducers.

    Reducers waiting for this very map output could otherwise hold every
    slot and wait forever. The newest reduce attempt goes (not on the worker
    that lost the output, when another will do); it is not a failure, and the
    reduce runs again once every map output exists.
    """
    reducers = [a for a in reversed(job.running.values()) if a.kind == REDUCE]
    for att in reducers:
        if att.worker.id == task.lost_on and len(reducers) > 1:
            continue
        st.end_attempt(att, outcome="preempted")
        out.append(Cancel(att.worker.id, att.id, reason=f"preempted for {task.name}"))
        job.stats["preempted_reduces"] += 1
        st.note(
            out,
            f"job {job.id}: reduce task {att.task.index} preempted on {att.worker.name}",
            f"{task.name} must run again and no slot is free",
        )
        return place(st, job, task, queue=0)
    return None


def strike(st: MasterState, job: Job, w: Worker, out: list[Command], why: str) -> None:
    """Count a failure of ``job`` on ``w``; enough of them exclude it from the job."""
    w.failures[job.id] = n = w.failures.get(job.id, 0) + 1
    if n == st.settings.worker_job_failures and w.id in st.workers:
        job.excluded.add(w.id)
        st.note(out, f"job {job.id}: worker {w.name} gets no more of its tasks", why)
        if len(job.excluded) >= len(st.workers):
            return  # no other worker is left: it keeps what it runs
        for att in [a for a in w.running.values() if a.job is job]:  # queued there, likely
            st.end_attempt(att)
            out.append(Cancel(w.id, att.id, reason=f"worker excluded from job {job.id}"))


def missing_attempts(st: MasterState, w: Worker, seen: int, now: float, out: list[Command]) -> None:
    """Called for a heartbeat listing fewer attempts than ``w`` has slots, after the
    listed ones were marked begun: such a worker holds no queued attempt (a free slot
    takes the next at once). An attempt queued there more than two heartbeat
    intervals ago and never listed was dropped there, or never reached it: it ends
    (its task goes idle, not a failure), is cancelled on the worker, and the worker
    gets a strike. Else a worker that heartbeats but never runs what it is given
    would hold its tasks for good. ``seen``, the highest attempt id the worker says
    it has read (-1: not said), spares an ASSIGN still in flight (sent after what
    the worker has read: a backlog in the master's or the worker's socket) until
    ``worker_timeout``. O(attempts on ``w``)."""
    s = st.settings
    old = now - 2 * s.heartbeat_interval
    for att in [a for a in w.running.values() if a.began is None and a.start < old]:
        if att.id not in st.attempts:
            continue  # ended by a strike earlier in this loop
        if seen >= 0 and att.id > seen and now - att.start <= s.worker_timeout:
            continue  # not read yet: in flight
        job = att.job
        why = f"{w.name} does not hold it {now - att.start:.1f}s after it was sent"
        st.note(out, f"job {job.id}: {att.task.name} runs again", why)
        st.end_attempt(att, outcome="lost", error=why)
        out.append(Cancel(w.id, att.id, reason="not held by the worker"))
        job.stats["lost_attempts"] += 1
        strike(st, job, w, out, f"{att.task.name} was not held there")


# -- the clock: timeouts and backups -----------------------------------------------------


def notice_long_tasks(st: MasterState, job: Job, now: float) -> None:
    """On the tick: a running attempt of the current phase that has run long (on the
    master's clock) ends small-task queueing in that phase. Looks at running attempts
    only, and only until one is found."""
    kind = job.phase
    if job.long_seen[kind]:
        return
    for att in job.running.values():
        if (
            att.kind == kind
            and att.began is not None
            and policy.is_long(now - att.began, st.settings)
        ):
            job.long_seen[kind] = True
            return


def check_timeouts(st: MasterState, job: Job, now: float, out: list[Command]) -> None:
    """Fail the job's attempts that have run longer than its ``task_timeout``."""
    limit = job.spec.task_timeout
    if limit is None:
        return
    for att in list(job.running.values()):
        if job.ended:
            return
        if att.began is None or now - att.began <= limit:
            continue  # queued on its worker, or within its time
        job.stats["timeouts"] += 1
        out.append(Cancel(att.worker.id, att.id, reason=f"task_timeout={limit:g}s"))
        message = f"{att.task.name} ran longer than task_timeout={limit:g}s"
        st.attempt_failed(att, now, out, ErrorInfo("TaskTimeout", message))


def speculate(st: MasterState, job: Job, now: float, out: list[Command]) -> None:
    """Launch backups of the current phase's stragglers while slots are free."""
    kind = job.phase
    if not job.spec.speculative or job.ended or job.idle[kind] or st.free_slots <= 0:
        return
    # (attempt, when it began) of the phase's running attempts that have no backup
    running = [
        (a, a.began)
        for a in job.running.values()
        if a.kind == kind and a.began is not None and len(a.task.running) == 1
    ]
    typical = typical_time(job, kind, running, now)
    s = st.settings
    for att, began in running:
        if att.id not in st.attempts:
            continue  # ended by an exclusion earlier in this loop
        why = policy.straggler(
            now=now,
            start=began,
            progress=att.progress,
            quiet_since=max(began, att.worker.last_activity),
            typical=typical,
            stall_seconds=s.stall_seconds,
            min_seconds=s.speculation_min_seconds,
            quiet_factor=s.speculation_quiet_factor,
            late_factor=s.speculation_late_factor,
        )
        if why is None:
            continue
        w = place(st, job, att.task, queue=0)
        if w is None:
            return
        st.note(out, f"job {job.id}: backup of {att.task.name} on {w.name}", why)
        assign(st, job, att.task, w, now, out, backup=True, reason=f"backup: {why}")
        if now - att.worker.last_activity > s.stall_seconds:
            strike(st, job, att.worker, out, f"{att.task.name} stalled there")
