"""The messages zmqmr sends: every one a typed record, its fields' kinds and checks.

This is the vocabulary of the wire; ``zmqmr.protocol`` writes and reads these
messages as frames (and re-exports them: callers name ``protocol.Assign``).
A message class is registered under its TYPE by ``_message``; its ``FIELDS``
say the kind of each header field (``zmqmr.records``), nested parts come from
``zmqmr.parts``, and ``validate`` / ``validate_blobs`` hold the checks between
fields and between the header and the blobs. The worker and its executors
exchange the same objects over a pipe, with ``RunAttempt`` for an attempt.
Imports: the standard library, ``zmqmr.errors``, ``zmqmr.records`` and
``zmqmr.parts`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from .errors import ProtocolError
from .parts import (
    COUNT,
    ENDPOINT,
    JOB,
    LABEL,
    MAX_BLOBS,
    MAX_FETCH_PARTS,
    MAX_MAP_TASKS,
    MAX_POLL_WAIT,
    MAX_REDUCE_TASKS,
    NAME,
    TASK_KIND,
    TEXT,
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
from .records import (
    Bool,
    Int,
    Ints,
    Kind,
    ListOf,
    Num,
    Obj,
    Opt,
    Record,
    Str,
)

# -- messages ------------------------------------------------------------------------

M = TypeVar("M", bound="Message")


@dataclass(slots=True)
class Message(Record):
    """A record that travels as one multipart message: its type, header and blobs.

    ``blobs`` are the opaque frames after the header (keyword-only in every
    message, after its own fields)."""

    TYPE: ClassVar[str]
    BLOBS: ClassVar[tuple[int, int]] = (0, 0)
    blobs: list[bytes] = field(default_factory=list, kw_only=True)

    def validate_blobs(self) -> None:
        """Checks between the header and the blobs; raise ProtocolError."""


def _message(type_name: str, blobs: tuple[int, int] = (0, 0)) -> Any:
    def register(cls: type[M]) -> type[M]:
        cls.TYPE = type_name
        cls.BLOBS = blobs
        if type_name in MESSAGES:  # pragma: no cover - a typo in this module
            raise AssertionError(type_name)
        MESSAGES[type_name] = cls
        return cls

    return register


MESSAGES: dict[str, type[Message]] = {}


# worker <-> master


@_message("READY")
@dataclass(slots=True)
class Ready(Message):
    """A worker registers: its slots, shuffle address, and the map outputs it holds."""

    slots: int
    shuffle: str
    host: str
    pid: int
    held: list[HeldOutput] = field(default_factory=list)
    FIELDS: ClassVar[dict[str, Kind]] = {
        "slots": Int(1, 1 << 20),
        "shuffle": ENDPOINT,
        "host": LABEL,
        "pid": COUNT,
        "held": ListOf(Obj(HeldOutput), 1_000_000),
    }


@_message("WELCOME")
@dataclass(slots=True)
class Welcome(Message):
    heartbeat_interval: float
    worker_timeout: float
    FIELDS: ClassVar[dict[str, Kind]] = {
        "heartbeat_interval": Num(0.001, 3600.0),
        "worker_timeout": Num(0.001, 86400.0),
    }


@_message("HEARTBEAT")
@dataclass(slots=True)
class Heartbeat(Message):
    """Both ways; from a worker it carries the progress of its running attempts and
    ``seen``, the highest attempt id of the ASSIGNs it has read since its WELCOME (-1:
    none, or not said): the master tells an ASSIGN still in flight from one dropped."""

    progress: list[AttemptProgress] = field(default_factory=list)
    seen: int = -1
    FIELDS: ClassVar[dict[str, Kind]] = {
        "progress": ListOf(Obj(AttemptProgress), 4096),
        "seen": Int(-1),
    }


@_message("ASSIGN", (0, 2))
@dataclass(slots=True)
class Assign(Message):
    """Run one attempt. Blobs: the job's code (first time on this worker), split records."""

    attempt: int
    job: str
    kind: str
    task: int
    spec: TaskSpec
    has_code: bool = False
    has_records: bool = False
    FIELDS: ClassVar[dict[str, Kind]] = {
        "attempt": COUNT,
        "job": JOB,
        "kind": TASK_KIND,
        "task": COUNT,
        "spec": Obj(TaskSpec),
        "has_code": Bool(),
        "has_records": Bool(),
    }

    def validate_blobs(self) -> None:
        if len(self.blobs) != self.has_code + self.has_records:
            raise ProtocolError(f"ASSIGN: {len(self.blobs)} blobs for its has_code/has_records")

    @property
    def code(self) -> bytes | None:
        return self.blobs[0] if self.has_code else None

    @property
    def records(self) -> bytes | None:
        return self.blobs[-1] if self.has_records else None


@_message("CANCEL")
@dataclass(slots=True)
class Cancel(Message):
    """Stop an attempt and remove its files."""

    attempt: int
    FIELDS: ClassVar[dict[str, Kind]] = {"attempt": COUNT}


@_message("RELOCATE")
@dataclass(slots=True)
class Relocate(Message):
    """A map output that a running reducer needs has a new location."""

    attempt: int
    location: Location
    FIELDS: ClassVar[dict[str, Kind]] = {"attempt": COUNT, "location": Obj(Location)}


@_message("DROP_JOB")
@dataclass(slots=True)
class DropJob(Message):
    """The job ended: forget its code and delete its map outputs."""

    job: str
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB}


@_message("RECONNECT")
@dataclass(slots=True)
class Reconnect(Message):
    """The master does not know this worker: register again."""

    FIELDS: ClassVar[dict[str, Kind]] = {}


@_message("DONE", (0, 1))
@dataclass(slots=True)
class Done(Message):
    """An attempt succeeded. Blob: its encoded results, for a reduce returning them."""

    attempt: int
    report: Report
    FIELDS: ClassVar[dict[str, Kind]] = {"attempt": COUNT, "report": Obj(Report)}

    @property
    def result(self) -> bytes | None:
        return self.blobs[0] if self.blobs else None


@_message("FAILED")
@dataclass(slots=True)
class Failed(Message):
    """An attempt failed: ``user`` (an exception), ``crash`` (the executor died),
    ``lost`` (not the task's fault). ``record`` pins a map failure on a record."""

    attempt: int
    kind: str
    error: ErrorInfo
    record: int | None = None
    FIELDS: ClassVar[dict[str, Kind]] = {
        "attempt": COUNT,
        "kind": Str(choices=frozenset({"user", "crash", "lost"})),
        "error": Obj(ErrorInfo),
        "record": Opt(COUNT),
    }


@_message("FETCH_FAILED")
@dataclass(slots=True)
class FetchFailed(Message):
    """A reducer cannot fetch one map output."""

    attempt: int
    map_task: int
    map_attempt: int
    reason: str
    FIELDS: ClassVar[dict[str, Kind]] = {
        "attempt": COUNT,
        "map_task": COUNT,
        "map_attempt": COUNT,
        "reason": TEXT,
    }


@_message("ASK_LOGS")
@dataclass(slots=True)
class AskLogs(Message):
    """Master -> worker: the captured output of a job's attempts held there (only of
    tasks of ``kind``, only of tasks numbered ``task``, when given)."""

    request: int
    job: str
    kind: str | None = None
    task: int | None = None
    FIELDS: ClassVar[dict[str, Kind]] = {
        "request": COUNT,
        "job": JOB,
        "kind": Opt(TASK_KIND),
        "task": Opt(COUNT),
    }


#: Attempt logs one reply may carry; a worker stops short of it and says how many more.
MAX_LOGS = 512


@_message("LOGS")
@dataclass(slots=True)
class Logs(Message):
    """Worker -> master, and master -> client: attempt logs; ``more`` were left out.
    ``missing`` (to a client): workers that did not answer in time."""

    request: int
    job: str
    logs: list[AttemptLog]
    more: int = 0
    missing: list[str] = field(default_factory=list)
    FIELDS: ClassVar[dict[str, Kind]] = {
        "request": COUNT,
        "job": JOB,
        "logs": ListOf(Obj(AttemptLog), MAX_LOGS * 64),
        "more": COUNT,
        "missing": ListOf(LABEL, 100_000),
    }


@_message("BYE")
@dataclass(slots=True)
class Bye(Message):
    """A worker is leaving."""

    FIELDS: ClassVar[dict[str, Kind]] = {}


# client <-> master


@_message("SUBMIT", (1, MAX_BLOBS))
@dataclass(slots=True)
class Submit(Message):
    """Blobs: the job's code, then one per records split."""

    job: str
    spec: JobSpec
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB, "spec": Obj(JobSpec)}

    def validate_blobs(self) -> None:
        records = len(self.blobs) - 1
        for i, split in enumerate(self.spec.splits):
            if split.kind == "records" and not (split.blob is not None and split.blob < records):
                raise ProtocolError(f"SUBMIT: split {i} names records blob {split.blob}, not sent")


@_message("ACCEPTED")
@dataclass(slots=True)
class Accepted(Message):
    job: str
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB}


@_message("REJECTED")
@dataclass(slots=True)
class Rejected(Message):
    """``job`` is whatever the SUBMIT named, valid or not, so the sender can match it."""

    job: str
    error: ErrorInfo
    FIELDS: ClassVar[dict[str, Kind]] = {"job": NAME, "error": Obj(ErrorInfo)}


@_message("POLL")
@dataclass(slots=True)
class Poll(Message):
    """How is this job doing? With ``wait`` > 0, the answer waits up to that many
    seconds for the job's end (a long poll)."""

    job: str
    wait: float = 0.0
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB, "wait": Num(0.0, MAX_POLL_WAIT)}


@_message("PROGRESS")
@dataclass(slots=True)
class Progress(Message):
    job: str
    progress: JobProgress
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB, "progress": Obj(JobProgress)}


@_message("RESULT", (0, MAX_REDUCE_TASKS))
@dataclass(slots=True)
class Result(Message):
    """Blobs: one encoded result per partition, when ``summary.returned``."""

    job: str
    summary: Summary
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB, "summary": Obj(Summary)}


@_message("JOB_FAILED")
@dataclass(slots=True)
class JobFailed(Message):
    job: str
    error: ErrorInfo
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB, "error": Obj(ErrorInfo)}


@_message("ACK_JOB")
@dataclass(slots=True)
class AckJob(Message):
    """The client has the job's outcome (RESULT or JOB_FAILED): the master may forget it."""

    job: str
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB}


@_message("CANCEL_JOB")
@dataclass(slots=True)
class CancelJob(Message):
    job: str
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB}


@_message("STATUS")
@dataclass(slots=True)
class StatusRequest(Message):
    FIELDS: ClassVar[dict[str, Kind]] = {}


@_message("STATUS_REPLY")
@dataclass(slots=True)
class StatusReply(Message):
    status: ClusterStatus
    FIELDS: ClassVar[dict[str, Kind]] = {"status": Obj(ClusterStatus)}


@_message("JOB_INFO")
@dataclass(slots=True)
class JobInfo(Message):
    """Client -> master: one job in detail (``zmqmr status JOB``)."""

    job: str
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB}


@_message("JOB_INFO_REPLY")
@dataclass(slots=True)
class JobInfoReply(Message):
    """None: the master knows no job of that id (running, ended or remembered)."""

    job: str
    detail: JobDetail | None
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB, "detail": Opt(Obj(JobDetail))}


@_message("GET_LOGS")
@dataclass(slots=True)
class GetLogs(Message):
    """Client -> master: the attempt logs of a job (of one kind of task, of one task);
    answered with LOGS once every live worker has answered or a few seconds passed."""

    job: str
    kind: str | None = None
    task: int | None = None
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB, "kind": Opt(TASK_KIND), "task": Opt(COUNT)}


# reducer <-> shuffle server


@_message("FETCH")
@dataclass(slots=True)
class Fetch(Message):
    """Bytes of several map outputs' segments for one partition, by column: map task
    ``maps[i]``'s output of attempt ``attempts[i]``, from byte ``offsets[i]`` of its
    segment; ``max_bytes`` in all."""

    job: str
    partition: int
    maps: list[int]
    attempts: list[int]
    offsets: list[int]
    max_bytes: int
    FIELDS: ClassVar[dict[str, Kind]] = {
        "job": JOB,
        "partition": Int(0, MAX_REDUCE_TASKS),
        "maps": Ints(MAX_FETCH_PARTS, 0, MAX_MAP_TASKS - 1),
        "attempts": Ints(MAX_FETCH_PARTS),
        "offsets": Ints(MAX_FETCH_PARTS),
        "max_bytes": Int(1, 1 << 31),
    }

    def validate(self, where: str) -> None:
        if not self.maps:
            raise ProtocolError(f"{where}: no parts asked for")
        if not len(self.attempts) == len(self.offsets) == len(self.maps):
            raise ProtocolError(f"{where}: part columns of different lengths")
        if len(set(self.maps)) != len(self.maps):
            raise ProtocolError(f"{where}: a map task asked for twice")


@_message("CHUNKS", (1, 1))
@dataclass(slots=True)
class Chunks(Message):
    """Segments' bytes, by column, in the order asked: part ``i`` is ``lengths[i]``
    bytes of map task ``maps[i]``'s segment from byte ``offsets[i]`` (``totals[i]``
    long), and the one blob is every part's bytes, concatenated. The answer may stop
    short of the parts asked for (at ``max_bytes``), a part short of its end."""

    maps: list[int]
    offsets: list[int]
    totals: list[int]
    lengths: list[int]
    FIELDS: ClassVar[dict[str, Kind]] = {
        "maps": Ints(MAX_FETCH_PARTS, 0, MAX_MAP_TASKS - 1),
        "offsets": Ints(MAX_FETCH_PARTS),
        "totals": Ints(MAX_FETCH_PARTS),
        "lengths": Ints(MAX_FETCH_PARTS),
    }

    def validate(self, where: str) -> None:
        if not len(self.offsets) == len(self.totals) == len(self.lengths) == len(self.maps):
            raise ProtocolError(f"{where}: part columns of different lengths")
        if len(set(self.maps)) != len(self.maps):
            raise ProtocolError(f"{where}: a map task answered twice")
        if any(o + n > t for o, n, t in zip(self.offsets, self.lengths, self.totals)):
            raise ProtocolError(f"{where}: a part runs past its segment's end")

    def validate_blobs(self) -> None:
        if sum(self.lengths) != len(self.blobs[0]):
            raise ProtocolError(
                f"CHUNKS: {sum(self.lengths)} bytes of parts, {len(self.blobs[0])} sent"
            )


@_message("FETCH_ERROR")
@dataclass(slots=True)
class FetchError(Message):
    """``map_task`` (if any) names the output that cannot be served; ``corrupt`` says
    whether it failed its checksum (final) rather than being missing."""

    reason: str
    corrupt: bool
    map_task: int | None = None
    FIELDS: ClassVar[dict[str, Kind]] = {
        "reason": TEXT,
        "corrupt": Bool(),
        "map_task": Opt(COUNT),
    }


# -- the worker <-> executor pipe ----------------------------------------------------


@dataclass(slots=True)
class RunAttempt:
    """Worker -> executor: run this attempt. ``code`` is sent once per executor and job."""

    attempt: int
    job: str
    kind: str
    task: int
    spec: TaskSpec
    code: bytes | None
    records: bytes | None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # By position, as a Record is: one is pickled per attempt.
        return RunAttempt, (
            self.attempt,
            self.job,
            self.kind,
            self.task,
            self.spec,
            self.code,
            self.records,
        )


#: Executor -> worker: AttemptProgress, Done, Failed, FetchFailed.
#: Worker -> executor: RunAttempt, Relocate (while a reduce waits), DropJob.
