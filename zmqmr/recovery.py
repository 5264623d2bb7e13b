"""Recovery: the part of the master's pure state machine that reads its journal back.

``MasterState`` (state.py) emits a ``Persist`` command for every durable fact
(a job accepted with its blobs, an attempt started, a map output or a reduce
completed, a map output lost, a job's end, an outcome collected). A master
started again hands each entry back as a ``Replayed`` event, then
``Recovered``; this module turns them into the state's tables:

* a job comes back as if it had just been submitted; its attempt counts and
  the highest attempt id move on past what the journal names, so no id is
  given twice to one task;
* a committed reduce stays done (its part file, or its result bytes, are in
  the entry);
* a completed map waits (``WAITING``) for the worker that holds its output:
  when a worker registers from the journaled shuffle address and lists the
  same (job, task, attempt) among its held outputs, the output is reused and
  the map is done without running again; if that worker registers without it,
  or none has by ``worker_timeout`` after the restart, the map runs again;
* a job's end brings back its outcome, for a client that has not collected it.

``journal_entries`` is the other direction: the state's durable facts as
entries, written by compaction in place of the whole history.

It is a part of the state machine kept in a file of its own, and works on the
state's tables through its named interface (state.py says which). Pure, like
state.py: no ``zmq``, no ``time``, no files. Imports: the standard
library and zmqmr's protocol, journal, events and tables modules.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import outcomes
from .events import AbortJob, Command, JobSubmitted, Note, SendJobFailed, SendResult
from .journal import Entry
from .protocol import ErrorInfo, HeldOutput, JobSpec, Report, Summary
from .tables import DONE, IDLE, MAP, REDUCE, WAITING, Job, Worker, add_counters

if TYPE_CHECKING:
    from .state import MasterState

Handler = Callable[["MasterState", Entry, float, list[Command]], None]


def replay(st: MasterState, entry: Entry, now: float, out: list[Command]) -> None:
    """Apply one journal entry. Raises ValueError (or ProtocolError, KeyError) if the
    entry does not make sense: the shell refuses to start rather than guess."""
    handler = HANDLERS.get(entry.kind)
    if handler is None:
        raise ValueError(f"unknown journal entry {entry.kind!r}")
    handler(st, entry, now, out)


def _job(st: MasterState, entry: Entry, now: float, out: list[Command]) -> None:
    f = entry.fields
    spec = JobSpec.from_json(f["spec"], "journal: job spec")
    if not entry.blobs:
        raise ValueError(f"journal: job {f['job']} has no code")
    code, *records = entry.blobs
    st.handle(JobSubmitted(b"", f["job"], spec, code, records), now)


def _active(st: MasterState, f: dict[str, Any]) -> Job | None:
    """The running job an entry names (None: it ended, and the entry is history)."""
    return st.active.get(f["job"])


def _attempt(st: MasterState, entry: Entry, now: float, out: list[Command]) -> None:
    f = entry.fields
    st.skip_ids(int(f["id"]))
    job = _active(st, f)
    if job is not None:
        job.stats[f"{f['kind']}_attempts"] += 1


def _attempts(st: MasterState, entry: Entry, now: float, out: list[Command]) -> None:
    """A compacted job's attempt counts and the highest attempt id given."""
    f = entry.fields
    st.skip_ids(int(f["last"]))
    job = _active(st, f)
    if job is not None:
        job.stats["map_attempts"] += int(f["map"])
        job.stats["reduce_attempts"] += int(f["reduce"])


def _unwait(st: MasterState, job: Job, index: int) -> None:
    task = job.maps[index]
    if task.recovered is not None:
        pending = st.waiting.get(task.recovered[1])
        if pending is not None:
            pending.pop((job.id, index), None)
            if not pending:
                del st.waiting[task.recovered[1]]
        task.recovered = None


def _map(st: MasterState, entry: Entry, now: float, out: list[Command]) -> None:
    f = entry.fields
    job = _active(st, f)
    if job is None:
        return
    index, attempt, shuffle = int(f["task"]), int(f["attempt"]), str(f["shuffle"])
    report = Report.from_json(f["report"], "journal: map report")
    _unwait(st, job, index)
    task = job.maps[index]
    task.recovered = (attempt, shuffle, report)
    st.waiting.setdefault(shuffle, {})[(job.id, index)] = None
    st.set_status(job, task, WAITING)


def _lost(st: MasterState, entry: Entry, now: float, out: list[Command]) -> None:
    job = _active(st, entry.fields)
    if job is not None:
        index = int(entry.fields["task"])
        _unwait(st, job, index)
        st.set_status(job, job.maps[index], IDLE)


def _reduce(st: MasterState, entry: Entry, now: float, out: list[Command]) -> None:
    f = entry.fields
    job = _active(st, f)
    if job is None:
        return
    task = job.reduces[int(f["task"])]
    report = Report.from_json(f["report"], "journal: reduce report")
    if task.status == DONE and task.report is not None:
        add_counters(job.counters, task.report.counters, -1)
    task.report = report
    task.result = entry.blobs[0] if f["result"] else None
    task.approved = int(f["attempt"])  # the attempt whose part file the job commit moves
    add_counters(job.counters, report.counters, 1)
    st.set_status(job, task, DONE)


def _end(st: MasterState, entry: Entry, now: float, out: list[Command]) -> None:
    f = entry.fields
    job_id = f["job"]
    job = st.jobs.get(job_id)
    if job is None:  # compacted: only its end is left
        spec = JobSpec(str(f["name"]), max(1, int(f["reduces"])), [])
        job = Job(job_id, b"", spec, b"", [], [], [], now)
        job.idle = {MAP: deque(), REDUCE: deque()}
        st.jobs[job_id] = job
    elif job_id in st.active:
        outcomes.end_job(st, job, str(f["status"]), now, out, "its end was journaled")
    job.status = str(f["status"])
    job.finished = now  # the time to collect it starts again with this master
    if "summary" in f:
        summary = Summary.from_json(f["summary"], "journal: job summary")
        job.outcome = SendResult(b"", job_id, summary, [])
    else:
        job.outcome = SendJobFailed(b"", job_id, ErrorInfo.from_json(f["error"], "journal: error"))
    st.finished[job_id] = job
    outcomes.free_output_dir(st, job_id, job.spec.output_dir)


def end_fields(job: Job) -> dict[str, Any]:
    """The fields of a job's "end" entry."""
    outcome = job.outcome
    f: dict[str, Any] = {
        "job": job.id,
        "name": job.spec.name,
        "status": job.status,
        "maps": len(job.maps),
        "reduces": len(job.reduces),
    }
    if isinstance(outcome, SendResult):
        f["summary"] = outcome.summary.to_json()
    elif outcome is not None:
        f["error"] = outcome.error.to_json()
    return f


def _collected(st: MasterState, entry: Entry, now: float, out: list[Command]) -> None:
    job = st.finished.get(entry.fields["job"])
    if job is not None:
        outcomes.forget(st, job, [], "collected")


#: Entry kind -> how it is replayed. A module that journals entries of its own
#: adds its kind here (and to ``journal_entries``, so compaction keeps them).
HANDLERS: dict[str, Handler] = {
    "job": _job,
    "attempt": _attempt,
    "attempts": _attempts,
    "map": _map,
    "lost": _lost,
    "reduce": _reduce,
    "end": _end,
    "collected": _collected,
}


def resume(st: MasterState, now: float, out: list[Command]) -> None:
    """Every entry is back: finish what had finished, and wait for the workers."""
    for job in list(st.active.values()):
        if len(job.reduces) == job.done[REDUCE]:
            outcomes.succeed_job(
                st, job, now, out
            )  # its last reduce was journaled, its end was not
    for job in st.finished.values():  # its abort may not have run: again (it is idempotent)
        if job.spec.output_dir is not None and isinstance(job.outcome, SendJobFailed):
            out.append(AbortJob(job.id, job.spec.output_dir, reason="resumed after a restart"))
    waiting = sum(len(p) for p in st.waiting.values())
    st.claim_deadline = now + st.settings.worker_timeout if waiting else None
    st.dirty = True
    out.append(
        Note(
            f"recovered {len(st.active)} running and {len(st.finished)} finished jobs; "
            f"{waiting} map outputs wait for their workers",
            reason="journal replayed",
        )
    )


def claim(
    st: MasterState, w: Worker, held: list[HeldOutput], now: float, out: list[Command]
) -> None:
    """A worker registered: reuse the journaled map outputs it still holds; the others
    it served run again."""
    pending = st.waiting.pop(w.shuffle, None)
    if not pending:
        return
    have = {(h.job, h.task, h.attempt) for h in held}
    reused = rerun = 0
    for job_id, index in pending:
        job = st.active.get(job_id)
        if job is None:
            continue
        task = job.maps[index]
        if task.status != WAITING or task.recovered is None:
            continue
        attempt, _, report = task.recovered
        task.recovered = None
        if (job_id, index, attempt) in have:
            st.attach_output(job, task, w, attempt, report)
            task.report = report
            add_counters(job.counters, report.counters, 1)
            job.holders.add(w.id)
            st.set_status(job, task, DONE)
            st.map_done(job, task, now, out)
            reused += 1
        else:
            st.set_status(job, task, IDLE)
            rerun += 1
    if not st.waiting:
        st.claim_deadline = None
    out.append(
        Note(
            f"worker {w.name} is back with {reused} journaled map outputs; {rerun} run again",
            reason="READY after a restart",
        )
    )


def release_all(st: MasterState, out: list[Command]) -> None:
    """No worker came back for these outputs in time: run their maps again."""
    n = 0
    for pending in st.waiting.values():
        for job_id, index in pending:
            job = st.active.get(job_id)
            if job is not None and job.maps[index].status == WAITING:
                job.maps[index].recovered = None
                st.set_status(job, job.maps[index], IDLE)
                n += 1
    st.waiting.clear()
    st.claim_deadline = None
    if n:
        out.append(
            Note(f"{n} journaled map outputs run again", reason="their workers did not return")
        )


def journal_entries(st: MasterState) -> list[Entry]:
    """What the state must not forget, as entries: what compaction writes."""
    entries: list[Entry] = st.observe.journal_entries()  # the finished jobs it remembers
    for job in st.jobs.values():
        if job.ended:
            entries.append(Entry("end", end_fields(job)))
            continue
        spec = job.spec.to_json()
        entries.append(Entry("job", {"job": job.id, "spec": spec}, [job.code, *job.records]))
        s = job.stats
        entries.append(
            Entry(
                "attempts",
                {
                    "job": job.id,
                    "map": s["map_attempts"],
                    "reduce": s["reduce_attempts"],
                    "last": st.last_id,
                },
            )
        )
        for task in job.maps:
            if task.status == DONE and task.output is not None and task.report is not None:
                attempt, shuffle, report = task.output.attempt, task.output.address, task.report
            elif task.status == WAITING and task.recovered is not None:
                attempt, shuffle, report = task.recovered
            else:
                continue
            f = {"job": job.id, "task": task.index, "attempt": attempt, "shuffle": shuffle}
            entries.append(Entry("map", {**f, "report": report.to_json()}))
        for task in job.reduces:
            if task.status == DONE and task.report is not None:
                f = {
                    "job": job.id,
                    "task": task.index,
                    "attempt": task.approved or 0,
                    "report": task.report.to_json(),
                }
                blobs = [] if task.result is None else [task.result]
                entries.append(Entry("reduce", {**f, "result": task.result is not None}, blobs))
    return entries
