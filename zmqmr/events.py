"""The master's vocabulary: the events its state machine takes and the commands it gives.

Every event carries a ``stimulus`` id (given by the shell: what arrived, and
when); every command carries the id of the event that caused it and a short
``reason``, so the master's log says why each thing happened, as Dask's worker
state machine does. ``Event`` and ``Command`` are unions: ``MasterState``
dispatches on them with ``match``, so mypy sees every case.

Payloads are the typed objects of ``zmqmr.protocol``, decoded and checked at
the socket. Imports: the standard library and ``zmqmr.protocol`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .protocol import (
    AttemptProgress,
    ClusterStatus,
    ErrorInfo,
    HeldOutput,
    JobProgress,
    JobSpec,
    Location,
    Report,
    Summary,
    TaskSpec,
)


def _stimulus() -> Any:
    return field(default="", kw_only=True, compare=False)


# -- events ---------------------------------------------------------------------


@dataclass(slots=True)
class WorkerReady:
    worker: bytes
    slots: int
    shuffle: str
    host: str
    pid: int
    held: list[HeldOutput] = field(default_factory=list)
    stimulus: str = _stimulus()


@dataclass(slots=True)
class WorkerSeen:
    """Any message from a worker; a heartbeat also carries attempt progress."""

    worker: bytes
    progress: list[AttemptProgress] = field(default_factory=list)
    stimulus: str = _stimulus()


@dataclass(slots=True)
class WorkerLeft:
    worker: bytes
    stimulus: str = _stimulus()


@dataclass(slots=True)
class WorkerMisbehaved:
    """A worker sent something malformed: drop it (it may register again)."""

    worker: bytes
    problem: str
    stimulus: str = _stimulus()


@dataclass(slots=True)
class AttemptDone:
    worker: bytes
    attempt: int
    report: Report
    result: bytes | None = None
    stimulus: str = _stimulus()


@dataclass(slots=True)
class AttemptFailed:
    worker: bytes
    attempt: int
    kind: str  # "user" (exception), "crash" (executor died), "lost" (not the task's fault)
    error: ErrorInfo
    record: int | None = None
    stimulus: str = _stimulus()


@dataclass(slots=True)
class FetchFailed:
    worker: bytes
    attempt: int
    map_task: int
    map_attempt: int
    reason: str
    stimulus: str = _stimulus()


@dataclass(slots=True)
class JobSubmitted:
    client: bytes
    job_id: str
    spec: JobSpec
    code: bytes
    records: list[bytes]
    stimulus: str = _stimulus()


@dataclass(slots=True)
class PollJob:
    """How is this job doing? With ``wait`` > 0, the answer waits for the job's end
    until ``now + wait`` (a long poll): the client learns of the end at once."""

    client: bytes
    job_id: str
    wait: float = 0.0
    stimulus: str = _stimulus()


@dataclass(slots=True)
class CancelJob:
    client: bytes
    job_id: str
    stimulus: str = _stimulus()


@dataclass(slots=True)
class StatusRequest:
    client: bytes
    stimulus: str = _stimulus()


@dataclass(slots=True)
class Tick:
    """The clock: liveness, timeouts, speculation and due long polls are checked here."""

    stimulus: str = _stimulus()


@dataclass(slots=True)
class Shutdown:
    """The master is stopping: tell clients and workers before it goes."""

    stimulus: str = _stimulus()


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
    | CancelJob
    | StatusRequest
    | Tick
    | Shutdown
)


# -- commands --------------------------------------------------------------------


def _why() -> Any:
    return field(default="", kw_only=True, compare=False)


@dataclass(slots=True)
class Welcome:
    worker: bytes
    stimulus: str = _why()
    reason: str = _why()


@dataclass(slots=True)
class Reregister:
    worker: bytes
    stimulus: str = _why()
    reason: str = _why()


@dataclass(slots=True)
class Assign:
    worker: bytes
    attempt: int
    job_id: str
    kind: str
    task: int
    spec: TaskSpec
    code: bytes | None = None
    records: bytes | None = None
    stimulus: str = _why()
    reason: str = _why()


@dataclass(slots=True)
class Cancel:
    worker: bytes
    attempt: int
    stimulus: str = _why()
    reason: str = _why()


@dataclass(slots=True)
class Relocate:
    worker: bytes
    attempt: int
    location: Location
    stimulus: str = _why()
    reason: str = _why()


@dataclass(slots=True)
class DropJob:
    worker: bytes
    job_id: str
    stimulus: str = _why()
    reason: str = _why()


@dataclass(slots=True)
class JobAccepted:
    client: bytes
    job_id: str
    stimulus: str = _why()
    reason: str = _why()


@dataclass(slots=True)
class JobRejected:
    client: bytes
    job_id: str
    error: ErrorInfo
    stimulus: str = _why()
    reason: str = _why()


@dataclass(slots=True)
class SendProgress:
    client: bytes
    job_id: str
    progress: JobProgress
    stimulus: str = _why()
    reason: str = _why()


@dataclass(slots=True)
class SendResult:
    client: bytes
    job_id: str
    summary: Summary
    blobs: list[bytes]
    stimulus: str = _why()
    reason: str = _why()


@dataclass(slots=True)
class SendJobFailed:
    client: bytes
    job_id: str
    error: ErrorInfo
    stimulus: str = _why()
    reason: str = _why()


@dataclass(slots=True)
class SendStatus:
    client: bytes
    status: ClusterStatus
    stimulus: str = _why()
    reason: str = _why()


@dataclass(slots=True)
class Note:
    """A decision worth a line in the master's log (no message is sent)."""

    what: str
    stimulus: str = _why()
    reason: str = _why()


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
    | Note
)
