"""What the master shows of its state: progress, status, one job in detail, stats.

Pure functions of ``MasterState``'s tables, called by the state when a client
asks (a poll, STATUS, JOB_INFO) and by the dashboard's snapshot; nothing here
changes the state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .events import SendJobFailed
from .observe import task_counts
from .protocol import (
    STATUS_ERROR_TEXT,
    ClusterStatus,
    JobDetail,
    JobProgress,
    JobStatus,
    WorkerStatus,
)
from .records import printable
from .tables import MAP, REDUCE, Job

if TYPE_CHECKING:
    from .state import MasterState


def job_stats(job: Job, now: float) -> dict[str, float]:
    end = job.finished if job.finished is not None else now
    start = job.started if job.started is not None else end
    maps_end = job.maps_done_at if job.maps_done_at is not None else end
    commit_start = job.commit_started if job.commit_started is not None else end
    stats: dict[str, float] = dict(job.stats)
    s = job.stats
    stats.update(
        maps=len(job.maps),
        reduces=len(job.reduces),
        queued_seconds=start - job.submitted,
        map_seconds=maps_end - start,
        reduce_seconds=commit_start - maps_end,
        commit_seconds=end - commit_start,
        total_seconds=end - job.submitted,
        shuffle_bytes=job.shuffle_bytes,
        # What the winning attempts wrote to local disk besides their outputs
        # (their counter: zmqmr.merge.SPILLED).
        spilled_bytes=job.counters.get("zmqmr.spilled_bytes", 0),
        # Records skip_bad_records left out, each task's once (its counter).
        skipped_records=job.counters.get("zmqmr.skipped_records", 0),
        reexecutions=s["reexecuted_maps"] + s["failed_attempts"] + s["lost_attempts"],
    )
    return stats


def job_progress(job: Job, now: float, workers: int) -> JobProgress:
    end = job.finished if job.finished is not None else now
    return JobProgress(
        state=job.status,
        maps=len(job.maps),
        maps_done=job.done[MAP],
        reduces=len(job.reduces),
        reduces_done=job.done[REDUCE],
        running=len(job.running),
        elapsed=max(0.0, end - job.submitted),
        workers=workers,
    )


def cluster_status(state: MasterState, now: float) -> ClusterStatus:
    return ClusterStatus(
        workers=[
            WorkerStatus(
                id=printable(w.id.decode("utf-8", "backslashreplace"))[:200],
                host=w.host,
                pid=w.pid,
                slots=w.slots,
                running=min(w.load, w.slots),
                queued=max(0, w.load - w.slots),
                last_heartbeat=round(max(0.0, now - w.last_seen), 3),
                shuffle=w.shuffle,
            )
            for w in state.workers.values()
        ],
        jobs=[job_status(state, j, now) for j in state.jobs.values()],
        history=state.observe.history_status(now),
        lost_workers=state.observe.lost_workers(now),
    )


def job_status(state: MasterState, job: Job, now: float) -> JobStatus:
    error = job.outcome.error if isinstance(job.outcome, SendJobFailed) else None
    if error is not None:  # its failures are whole in the job's detail (zmqmr status JOB)
        error = error.trimmed(STATUS_ERROR_TEXT)
    ended_ago = None if job.finished is None else round(max(0.0, now - job.finished), 3)
    return JobStatus(
        job.id,
        job.spec.name,
        job_progress(job, now, len(state.workers)),
        dict(job.counters),
        job_stats(job, now),
        error,
        ended_ago,
    )


def job_detail(state: MasterState, job_id: str, now: float) -> JobDetail | None:
    """One job in detail (``zmqmr status JOB``): held by the master or remembered."""
    job = state.jobs.get(job_id)
    if job is None:
        return state.observe.detail(job_id, None, {}, now)
    return state.observe.detail(job_id, job_status(state, job, now), task_counts(job), now)
