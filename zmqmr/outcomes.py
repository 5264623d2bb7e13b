"""Job outcomes: how a job ends, and how its outcome reaches its client. Part of the
master's pure state machine.

``MasterState`` (state.py) decides that a job is over (its last reduce is
done, a task failed too often, a client cancelled it, the output commit
answered); what follows is here:

* Ending (``end_job``, ``release``): the job leaves the active ones, its
  attempts are cancelled and every worker that holds its code or files is told
  to drop them.
* Success (``succeed_job``): results small enough come back through the master
  (``StoreResult``; over ``result_limit`` without an output_dir the job fails);
  with an output_dir the job first commits (``commit``: CommitJob, answered by
  JobCommitted), and only then has it succeeded.
* Failure and cancel (``fail_job``, ``on_cancel``): the outcome is the error; a
  job with an output_dir has its ``_temporary`` removed first (AbortJob,
  answered by JobAborted), and the outcome waits for that. A cancel once the
  commit has begun is too late.
* Delivery (``on_poll``, ``deliver``, ``forget``): an ended job's outcome goes
  to the client's long polls and is kept until a client acknowledges it or
  ``result_ttl`` passes; then the job moves to the history, and a later poll is
  told clearly why it is gone (``unknown``).

The functions take the state as their first argument and work through its
named interface (state.py says which), as ``recovery.py`` does. Pure, like
state.py: no ``zmq``, no ``time``. Imports: the standard library and zmqmr's
events, protocol, recovery and tables modules.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING

from . import recovery
from .events import (
    AbortJob,
    Cancel,
    CancelJob,
    Command,
    CommitJob,
    DropJob,
    DropResult,
    JobAborted,
    JobCommitted,
    PollJob,
    SendJobFailed,
    SendProgress,
    SendResult,
    StoreResult,
)
from .protocol import ErrorInfo, Summary
from .tables import (
    CANCELLED,
    COMMITTING,
    FAILED,
    KEEP_FINISHED,
    MAP,
    REDUCE,
    SUCCEEDED,
    Job,
)

if TYPE_CHECKING:
    from .state import MasterState


# -- what a client gets ----------------------------------------------------------------


def on_poll(st: MasterState, ev: PollJob, now: float, out: list[Command]) -> None:
    """The outcome if the job has one, else its progress, now or (a long poll) later."""
    job = st.jobs.get(ev.job_id)
    if job is None:
        out.append(SendJobFailed(ev.client, ev.job_id, unknown(st, ev.job_id)))
    elif job.outcome is not None and not job.output_busy:  # kept until acknowledged
        out.append(addressed_to(job.outcome, ev.client))
    elif ev.wait > 0:
        poll_id = st.new_id()
        st.polls.setdefault(job.id, {})[poll_id] = ev.client
        heapq.heappush(st.poll_deadlines, (now + ev.wait, poll_id, job.id))
    else:
        out.append(SendProgress(ev.client, job.id, st.progress(job, now)))


def unknown(st: MasterState, job_id: str) -> ErrorInfo:
    """Why the master holds no job ``job_id``, as the client is told it."""
    gone = st.gone.get(job_id)
    if gone == "expired":
        ttl = st.settings.result_ttl
        message = f"the result of job {job_id} expired: no client collected it in {ttl:g}s"
        return ErrorInfo("ResultExpired", message)
    if gone == "collected":
        return ErrorInfo("UnknownJob", f"the result of job {job_id} was collected already")
    if st.durable:
        message = f"the master does not know job {job_id}: it was never accepted here"
        return ErrorInfo("UnknownJob", message)
    message = (
        f"job {job_id} was lost: the master does not know it. A master without "
        "--state-dir forgets its jobs when it stops; submit the job again"
    )
    return ErrorInfo("JobLost", message)


def deliver(st: MasterState, job: Job, out: list[Command], journaled: bool = False) -> None:
    """Give an ended job's outcome to its waiting long polls, and keep it until a
    client acknowledges it (or it expires): a reply lost on the way is asked again.

    Not while its output dir is being aborted: JobAborted delivers it (the end
    is journaled at once, so a restarted master does not run the job again)."""
    assert job.outcome is not None
    if not journaled:
        st.persist(out, "end", **recovery.end_fields(job))
    if job.output_busy:
        return
    free_output_dir(st, job.id, job.spec.output_dir)
    outcome = job.outcome
    st.finished[job.id] = job
    waiting = st.polls.pop(job.id, None)
    if waiting:
        out.extend(addressed_to(outcome, client) for client in waiting.values())
    while len(st.finished) > KEEP_FINISHED:
        forget(st, next(iter(st.finished.values())), out, "expired")


def forget(st: MasterState, job: Job, out: list[Command], why: str) -> None:
    """A finished job's outcome was collected or expired: it moves to the history,
    and its result is dropped."""
    if st.jobs.pop(job.id, None) is not None:
        st.observe.remember(job, st.job_status(job, st.clock), st.clock)
    st.finished.pop(job.id, None)
    st.polls.pop(job.id, None)
    st.gone[job.id] = why
    while len(st.gone) > 4 * KEEP_FINISHED:
        st.gone.popitem(last=False)
    if isinstance(job.outcome, SendResult) and job.outcome.summary.returned:
        out.append(DropResult(job.id, reason=why))
    st.persist(out, "collected", job=job.id)
    remembered = st.observe.history_fields(job.id)
    if remembered is not None:  # after "collected": its replay brings back the details
        st.persist(out, "history", **remembered)


# -- ending a job ------------------------------------------------------------------------


def end_job(
    st: MasterState, job: Job, status: str, now: float, out: list[Command], why: str
) -> None:
    """``job`` is over (``status``): it leaves the active jobs and lets go of its workers."""
    job.status = status
    job.finished = now
    del st.active[job.id]
    st.reducing.pop(job.id, None)
    release(st, job, out)
    st.note(out, f"job {job.id} {status} after {now - job.submitted:.1f}s", why)


def release(st: MasterState, job: Job, out: list[Command]) -> None:
    """Stop the job's attempts and have its workers drop its code and map outputs."""
    for att in list(job.running.values()):
        st.end_attempt(att)
        out.append(Cancel(att.worker.id, att.id, reason=f"job {job.id} ended"))
    for task in job.maps:
        if task.output is not None:
            w = st.workers.get(task.output.worker)
            if w is not None:
                w.outputs.discard((job.id, task.index))
    for wid in sorted(job.holders):
        holder = st.workers.get(wid)
        if holder is not None:
            holder.has_code.discard(job.id)
            out.append(DropJob(wid, job.id, reason=f"job {job.id} ended"))
    job.holders.clear()
    job.code = b""
    job.records = []
    job.idle = {MAP: deque(), REDUCE: deque()}


def fail_job(st: MasterState, job: Job, now: float, out: list[Command], error: ErrorInfo) -> None:
    """End ``job`` with ``error`` as its outcome."""
    end_job(st, job, FAILED, now, out, f"{error.type}: {error.message}"[:300])
    failed_outcome(st, job, error, out)


def on_cancel(st: MasterState, ev: CancelJob, now: float, out: list[Command]) -> None:
    """A client cancels a job: too late once its output commit has begun."""
    job = st.jobs.get(ev.job_id)
    if job is None or job.ended:
        return
    if job.status == COMMITTING:
        st.note(out, f"job {job.id} is not cancelled", "its output commit has begun")
        return
    end_job(st, job, CANCELLED, now, out, "a client cancelled it")
    failed_outcome(st, job, ErrorInfo("JobCancelled", f"job {job.id} was cancelled"), out)


def failed_outcome(st: MasterState, job: Job, error: ErrorInfo, out: list[Command]) -> None:
    """An ended job's error, for its client once its ``_temporary`` is gone."""
    job.outcome = SendJobFailed(job.client, job.id, error)
    if job.spec.output_dir is not None:
        job.output_busy = True
        out.append(AbortJob(job.id, job.spec.output_dir, reason=f"job {job.id} {job.status}"))
    deliver(st, job, out)


# -- the output commit ---------------------------------------------------------------


def commit(st: MasterState, job: Job, now: float, out: list[Command]) -> None:
    """Every reduce is done: have the shell move the approved attempts' files into place."""
    assert job.spec.output_dir is not None
    job.status = COMMITTING
    job.output_busy = True
    job.commit_started = now
    release(st, job, out)  # a map output lost from now on need not run again
    approved = [t.approved for t in job.reduces]
    assert all(a is not None for a in approved)
    out.append(
        CommitJob(
            job.id,
            job.spec.output_dir,
            [a for a in approved if a is not None],
            reason="every reduce task is done",
        )
    )
    st.note(out, f"job {job.id}: committing {len(approved)} part files")


def on_committed(st: MasterState, ev: JobCommitted, now: float, out: list[Command]) -> None:
    """The shell carried out CommitJob: the job has succeeded, or failed to commit."""
    job = st.active.get(ev.job_id)
    if job is None or job.status != COMMITTING:
        return
    job.output_busy = False
    if ev.error is not None:
        message = f"the output commit to {job.spec.output_dir} failed: {ev.error.message}"
        fail_job(st, job, now, out, ErrorInfo("OutputCommitError", message))
        return
    succeed_job(st, job, now, out)


def free_output_dir(st: MasterState, job_id: str, output_dir: str | None) -> None:
    if output_dir is not None and st.output_dirs.get(output_dir) == job_id:
        del st.output_dirs[output_dir]


def on_aborted(st: MasterState, ev: JobAborted, now: float, out: list[Command]) -> None:
    """The shell carried out AbortJob: the directory is free and the outcome can go."""
    job = st.jobs.get(ev.job_id)
    if job is not None and ev.error is not None:
        st.note(out, f"job {job.id}: its _temporary may remain", ev.error.message)
    free_output_dir(st, ev.job_id, job.spec.output_dir if job is not None else None)
    if job is not None and job.output_busy and job.ended:
        job.output_busy = False
        deliver(st, job, out, journaled=True)


def too_big(limit: int, what: str) -> ErrorInfo:
    """The error of a job whose results cannot come back through the master."""
    return ErrorInfo(
        "ResultTooLarge",
        f"{what} exceed the {limit}-byte limit for results returned through the "
        "master; set output_dir to write them to files",
    )


def succeed_job(st: MasterState, job: Job, now: float, out: list[Command]) -> None:
    """Every reduce is done: commit the output first, or end the job with its results."""
    blobs = [t.result or b"" for t in job.reduces]
    returned = (
        all(t.result is not None for t in job.reduces)
        and sum(map(len, blobs)) <= st.settings.result_limit
    )
    if not returned and job.spec.output_dir is None:
        fail_job(st, job, now, out, too_big(st.settings.result_limit, "the results"))
        return
    if job.spec.output_dir is not None and job.status != COMMITTING:
        commit(st, job, now, out)
        return
    files = [t.report.output_file or "" for t in job.reduces if t.report is not None]
    end_job(st, job, SUCCEEDED, now, out, "every reduce task is done")
    summary = Summary(
        counters=dict(job.counters),
        stats=st.job_stats(job, now),
        output_files=files if job.spec.output_dir else [],
        returned=returned,
        text_exact=not returned
        and all(t.report is not None and t.report.text_exact for t in job.reduces),
    )
    if returned:
        out.append(StoreResult(job.id, blobs))
    for t in job.reduces:
        t.result = None
    job.outcome = SendResult(job.client, job.id, summary, [])
    deliver(st, job, out)


def addressed_to(outcome: SendResult | SendJobFailed, client: bytes) -> SendResult | SendJobFailed:
    """The same outcome, addressed to ``client``."""
    if isinstance(outcome, SendResult):
        return SendResult(client, outcome.job_id, outcome.summary, outcome.blobs)
    return SendJobFailed(client, outcome.job_id, outcome.error)
