"""The master's vocabulary: the events its state machine takes and the commands it gives.

Every event carries a ``stimulus`` id (given by the shell: what arrived, and
when); every command carries the id of the event that caused it and a short
``reason``, so the master's log says why each thing happened, as Dask's worker
state machine does. ``Event`` and ``Command`` are unions: ``MasterState``
dispatches on them with ``match``, so mypy sees every case.

Payloads are the typed objects of ``zmqmr.protocol``, decoded and checked at
the socket; journal entries are ``zmqmr.journal.Entry``. Imports: the
standard library, ``zmqmr.protocol`` and ``zmqmr.journal`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .journal import Entry
from .protocol import (
    AttemptLog,
    AttemptProgress,
    ClusterStatus,
    ErrorInfo,
    HeldOutput,
    JobDetail,
    JobProgress,
    JobSpec,
    Location,
    Report,
    Summary,
    TaskSpec,
)

# -- events ---------------------------------------------------------------------


@dataclass(slots=True)
class _Event:
    #: What caused it, for the log: given by the shell (the message and its number).
    stimulus: str = field(default="", kw_only=True, compare=False)


@dataclass(slots=True)
class WorkerReady(_Event):
    worker: bytes
    slots: int
    shuffle: str
    host: str
    pid: int
    held: list[HeldOutput] = field(default_factory=list)


@dataclass(slots=True)
class WorkerSeen(_Event):
    """Any message from a worker; a heartbeat also carries attempt progress and the
    highest attempt id the worker has read (``Heartbeat.seen``)."""

    worker: bytes
    progress: list[AttemptProgress] = field(default_factory=list)
    seen: int = -1


@dataclass(slots=True)
class WorkerLeft(_Event):
    worker: bytes


@dataclass(slots=True)
class WorkerMisbehaved(_Event):
    """A worker sent something malformed: drop it (it may register again)."""

    worker: bytes
    problem: str


@dataclass(slots=True)
class AttemptDone(_Event):
    worker: bytes
    attempt: int
    report: Report
    result: bytes | None = None


@dataclass(slots=True)
class AttemptFailed(_Event):
    worker: bytes
    attempt: int
    kind: str  # "user" (exception), "crash" (executor died), "lost" (not the task's fault)
    error: ErrorInfo
    record: int | None = None


@dataclass(slots=True)
class FetchFailed(_Event):
    worker: bytes
    attempt: int
    map_task: int
    map_attempt: int
    reason: str


@dataclass(slots=True)
class JobSubmitted(_Event):
    client: bytes
    job_id: str
    spec: JobSpec
    code: bytes
    records: list[bytes]


@dataclass(slots=True)
class PollJob(_Event):
    """How is this job doing? With ``wait`` > 0, the answer waits for the job's end
    until ``now + wait`` (a long poll): the client learns of the end at once."""

    client: bytes
    job_id: str
    wait: float = 0.0


@dataclass(slots=True)
class AckJob(_Event):
    """A client has the job's outcome: it may be forgotten."""

    client: bytes
    job_id: str


@dataclass(slots=True)
class Replayed(_Event):
    """An entry of the journal a previous master wrote, read back at start."""

    entry: Entry


@dataclass(slots=True)
class Recovered(_Event):
    """Every journal entry has been replayed: resume the jobs."""


@dataclass(slots=True)
class CancelJob(_Event):
    client: bytes
    job_id: str


@dataclass(slots=True)
class StatusRequest(_Event):
    client: bytes


@dataclass(slots=True)
class JobInfoRequest(_Event):
    """One job in detail, running, ended or remembered."""

    client: bytes
    job_id: str


@dataclass(slots=True)
class LogsRequest(_Event):
    """The attempt logs of a job (of one task, with ``kind`` and ``task``)."""

    client: bytes
    job_id: str
    kind: str | None = None
    task: int | None = None


@dataclass(slots=True)
class LogsArrived(_Event):
    """A worker's answer to AskLogs."""

    worker: bytes
    request: int
    job_id: str
    logs: list[AttemptLog]
    more: int = 0


@dataclass(slots=True)
class Tick(_Event):
    """The clock: liveness, timeouts, speculation and due long polls are checked here."""


@dataclass(slots=True)
class JobCommitted(_Event):
    """The shell carried out CommitJob: the part files and ``_SUCCESS`` are in place,
    unless ``error`` says why not."""

    job_id: str
    error: ErrorInfo | None = None


@dataclass(slots=True)
class JobAborted(_Event):
    """The shell carried out AbortJob: the job's ``_temporary`` is gone (``error``: why not)."""

    job_id: str
    error: ErrorInfo | None = None


@dataclass(slots=True)
class Shutdown(_Event):
    """The master is stopping: tell clients and workers before it goes."""


Event = (
    WorkerReady
    | WorkerSeen
    | WorkerLeft
    | WorkerMisbehaved
    | AttemptDone
    | AttemptFailed
    | FetchFailed
    | JobSubmitted
    | PollJob
    | AckJob
    | Replayed
    | Recovered
    | CancelJob
    | StatusRequest
    | JobInfoRequest
    | LogsRequest
    | LogsArrived
    | Tick
    | JobCommitted
    | JobAborted
    | Shutdown
)


# -- commands --------------------------------------------------------------------


@dataclass(slots=True)
class _Command:
    #: The stimulus of the event that caused it, and why.
    stimulus: str = field(default="", kw_only=True, compare=False)
    reason: str = field(default="", kw_only=True, compare=False)


@dataclass(slots=True)
class Welcome(_Command):
    worker: bytes


@dataclass(slots=True)
class Reregister(_Command):
    worker: bytes


@dataclass(slots=True)
class Assign(_Command):
    worker: bytes
    attempt: int
    job_id: str
    kind: str
    task: int
    spec: TaskSpec
    code: bytes | None = None
    records: bytes | None = None


@dataclass(slots=True)
class Cancel(_Command):
    worker: bytes
    attempt: int


@dataclass(slots=True)
class Relocate(_Command):
    worker: bytes
    attempt: int
    location: Location


@dataclass(slots=True)
class DropJob(_Command):
    worker: bytes
    job_id: str


@dataclass(slots=True)
class JobAccepted(_Command):
    client: bytes
    job_id: str


@dataclass(slots=True)
class JobRejected(_Command):
    client: bytes
    job_id: str
    error: ErrorInfo


@dataclass(slots=True)
class SendProgress(_Command):
    client: bytes
    job_id: str
    progress: JobProgress


@dataclass(slots=True)
class SendResult(_Command):
    """The outcome of a succeeded job. The state keeps no result bytes: with
    ``summary.returned``, the shell sends the blobs of its StoreResult."""

    client: bytes
    job_id: str
    summary: Summary
    blobs: list[bytes]


@dataclass(slots=True)
class SendJobFailed(_Command):
    client: bytes
    job_id: str
    error: ErrorInfo


@dataclass(slots=True)
class SendStatus(_Command):
    client: bytes
    status: ClusterStatus


@dataclass(slots=True)
class SendJobInfo(_Command):
    client: bytes
    job_id: str
    detail: JobDetail | None


@dataclass(slots=True)
class AskLogs(_Command):
    """Ask a worker for the logs of a job's attempts it holds."""

    worker: bytes
    request: int
    job_id: str
    kind: str | None
    task: int | None


@dataclass(slots=True)
class SendLogs(_Command):
    client: bytes
    job_id: str
    logs: list[AttemptLog]
    more: int
    missing: list[str]


@dataclass(slots=True)
class CommitJob(_Command):
    """Commit the job's output (``zmqmr.commit.commit_job``): ``approved[p]`` is the one
    attempt of partition ``p`` the state approved; no other attempt's file is moved.
    The shell answers with JobCommitted."""

    job_id: str
    output_dir: str
    approved: list[int]


@dataclass(slots=True)
class AbortJob(_Command):
    """Remove a failed or cancelled job's ``_temporary``; the shell answers with JobAborted."""

    job_id: str
    output_dir: str


@dataclass(slots=True)
class Persist(_Command):
    """Write this entry to the journal before carrying out the commands after it."""

    entry: Entry


@dataclass(slots=True)
class StoreResult(_Command):
    """Keep a succeeded job's result blobs for its clients (the state keeps none)."""

    job_id: str
    blobs: list[bytes]


@dataclass(slots=True)
class DropResult(_Command):
    """The job's result was collected or expired: free what holds it."""

    job_id: str


@dataclass(slots=True)
class Note(_Command):
    """A decision worth a line in the master's log (no message is sent)."""

    what: str


Command = (
    Welcome
    | Reregister
    | Assign
    | Cancel
    | Relocate
    | DropJob
    | JobAccepted
    | JobRejected
    | SendProgress
    | SendResult
    | SendJobFailed
    | SendStatus
    | SendJobInfo
    | AskLogs
    | SendLogs
    | Persist
    | StoreResult
    | DropResult
    | CommitJob
    | AbortJob
    | Note
)
