"""The wire format: every message zmqmr sends, as a typed object validated whole.

A message on a socket is a multipart frame list::

    [VERSION, TYPE, HEADER, *BLOBS]

VERSION is ``b"ZMQMR2"``; TYPE names the message class; HEADER is a JSON
object holding the message's fields; BLOBS are opaque byte frames (pickled
closures, in-memory records, encoded results). ``decode`` checks the header
whole, nested parts included (a job spec, an attempt's report, a map output's
location, an error): every field's type and range, no unknown field, no
missing one, no NaN or infinity, bounded lengths. What it returns is a typed
object; a message that does not fit raises ``ProtocolError``, and whoever
received it logs and drops it. Nothing here unpickles anything: blobs stay
bytes until a worker or a client decides to decode them.

The worker and its executors exchange the same objects over a pipe (pickled
by multiprocessing), so one set of types describes every exchange.

Over ROUTER sockets the peer identity comes first; ``split_routed`` and
``routed`` add and remove it. No other module builds or parses frame lists.
Imports: the standard library, ``zmqmr.errors`` and ``zmqmr.records`` only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from .errors import ProtocolError
from .records import (
    FAST,
    MAX_INT,
    MAX_NAME,
    Bool,
    DictOf,
    Int,
    Kind,
    ListOf,
    Num,
    Obj,
    Opt,
    Record,
    Str,
)

VERSION = b"ZMQMR2"
#: Upper bound on a JSON header; job specs with many splits are the largest.
MAX_HEADER_BYTES = 64 * 1024 * 1024
#: Upper bound on frames in one message (a job's in-memory record splits).
MAX_BLOBS = 200_001
#: The most map tasks (splits) and reduce tasks one job may have.
MAX_MAP_TASKS = 200_000
MAX_REDUCE_TASKS = 100_000
#: Longest a long poll may ask the master to hold its answer (seconds).
MAX_POLL_WAIT = 60.0
#: Bounds on free text: names, paths, error messages and tracebacks.
MAX_PATH = 4096
MAX_TEXT = 256 * 1024
#: Segments one FETCH may ask for; counters one attempt may report.
MAX_FETCH_PARTS = 1024
MAX_COUNTERS = 1024

#: Job ids: what a client may name a job (they become directory names on workers).
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


# -- nested parts ------------------------------------------------------------------

JOB = Str(64, pattern=JOB_ID)
NAME = Str(MAX_NAME)
#: A name shown to people: a job's name, a worker's host.
LABEL = Str(MAX_NAME, printable=True)
PATH = Str(MAX_PATH)
TEXT = Str(MAX_TEXT)
ENDPOINT = Str(300)
TASK_KIND = Str(choices=frozenset({"map", "reduce"}))
COUNT = Int()
SIGNED = Int(-MAX_INT, MAX_INT)
SECONDS = Num(0.0, 1e9)


@dataclass(slots=True)
class ErrorInfo(Record):
    """An error as it travels: the user's exception, or the master's reason."""

    type: str
    message: str
    traceback: str = ""
    task: str = ""
    user_message: str = ""
    #: The tail of the failing attempt's captured output (stdout, stderr, log records).
    log: str = ""
    FIELDS: ClassVar[dict[str, Kind]] = {
        "type": NAME,
        "message": TEXT,
        "traceback": TEXT,
        "task": NAME,
        "user_message": TEXT,
        "log": TEXT,
    }

    @classmethod
    def make(cls, type_name: str, message: str, traceback: str = "", **extra: str) -> ErrorInfo:
        """An ErrorInfo with every text cut to what the wire takes (the tail of a traceback)."""
        return cls(
            type_name[:MAX_NAME],
            message[:MAX_TEXT],
            traceback[-MAX_TEXT:],
            extra.get("task", "")[:MAX_NAME],
            extra.get("user_message", "")[:MAX_TEXT],
            extra.get("log", "")[-MAX_TEXT:],
        )


@dataclass(slots=True)
class Split(Record):
    """One map task's input: a byte range of a text file, whole files, or a records blob."""

    kind: str
    path: str | None = None
    start: int | None = None
    end: int | None = None
    paths: list[str] | None = None
    blob: int | None = None
    count: int | None = None
    first: int | None = None
    FIELDS: ClassVar[dict[str, Kind]] = {
        "kind": Str(choices=frozenset({"text", "files", "records"})),
        "path": Opt(PATH),
        "start": Opt(COUNT),
        "end": Opt(COUNT),
        "paths": Opt(ListOf(PATH, 100_000)),
        "blob": Opt(Int(0, MAX_BLOBS)),
        "count": Opt(COUNT),  # records: how many, and the index of the first
        "first": Opt(COUNT),
    }
    _NEEDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "text": ("path", "start", "end"),
        "files": ("paths",),
        "records": ("blob",),
    }

    def validate(self, where: str) -> None:
        for name in self._NEEDS[self.kind]:
            if getattr(self, name) is None:
                raise ProtocolError(f"{where}: a {self.kind} split needs {name!r}")
        if self.kind == "text" and self.start > self.end:  # type: ignore[operator]
            raise ProtocolError(f"{where}: start {self.start} is past end {self.end}")
        if self.kind == "files" and not self.paths:
            raise ProtocolError(f"{where}: a files split needs at least one path")

    def to_json(self) -> dict[str, Any]:
        return {n: v for n in self.FIELDS if (v := getattr(self, n)) is not None}


@dataclass(slots=True)
class JobSpec(Record):
    """What a client submits besides the blobs: settings and splits."""

    name: str
    num_reducers: int
    splits: list[Split]
    max_attempts: int = 4
    output_dir: str | None = None
    speculative: bool = True
    skip_bad_records: bool = False
    task_timeout: float | None = None
    has_combiner: bool = False
    FIELDS: ClassVar[dict[str, Kind]] = {
        "name": LABEL,
        "num_reducers": Int(1, MAX_REDUCE_TASKS),
        "splits": ListOf(Obj(Split), MAX_MAP_TASKS),
        "max_attempts": Int(1, 1000),
        "output_dir": Opt(PATH),
        "speculative": Bool(),
        "skip_bad_records": Bool(),
        "task_timeout": Opt(Num(0.001, 1e9)),
        "has_combiner": Bool(),
    }

    def validate(self, where: str) -> None:
        if not self.splits:
            raise ProtocolError(f"{where}: a job needs at least one split")


@dataclass(slots=True)
class Location(Record):
    """Where a reducer finds its segment of one map output, and how big it is."""

    map_task: int
    attempt: int
    address: str
    size: int
    groups: int = 0
    FIELDS: ClassVar[dict[str, Kind]] = {
        "map_task": COUNT,
        "attempt": COUNT,
        "address": ENDPOINT,
        "size": COUNT,
        "groups": COUNT,
    }


@dataclass(slots=True)
class TaskSpec(Record):
    """What one attempt needs to know about its job and task."""

    name: str
    num_reducers: int
    num_maps: int
    output_dir: str | None
    has_combiner: bool
    result_limit: int
    split: Split | None = None
    skip: list[int] = field(default_factory=list)
    #: A map under skip_bad_records leaves the index of the record it maps where
    #: its worker reads it if the executor dies (``layout.position_path``).
    track_records: bool = False
    partition: int | None = None
    #: A reduce's non-empty segments, one per map output that has data for it.
    locations: list[Location] = field(default_factory=list)
    FIELDS: ClassVar[dict[str, Kind]] = {
        "name": NAME,
        "num_reducers": Int(1, MAX_REDUCE_TASKS),
        "num_maps": Int(1, MAX_MAP_TASKS),
        "output_dir": Opt(PATH),
        "has_combiner": Bool(),
        "result_limit": COUNT,
        "split": Opt(Obj(Split)),
        "skip": ListOf(COUNT, 100_000),
        "track_records": Bool(),
        "partition": Opt(COUNT),
        "locations": ListOf(Obj(Location), MAX_MAP_TASKS),
    }


@dataclass(slots=True)
class Segment(Record):
    """One non-empty partition of a map output."""

    partition: int
    size: int
    groups: int
    FIELDS: ClassVar[dict[str, Kind]] = {
        "partition": Int(0, MAX_REDUCE_TASKS),
        "size": Int(1, MAX_INT),
        "groups": COUNT,
    }


@dataclass(slots=True)
class Report(Record):
    """What a finished attempt tells the master (map: its segments; reduce: its file)."""

    counters: dict[str, int] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    output_file: str | None = None
    too_big: bool = False
    bytes: int = 0
    FIELDS: ClassVar[dict[str, Kind]] = {
        "counters": DictOf(SIGNED, MAX_COUNTERS),
        "segments": ListOf(Obj(Segment), MAX_REDUCE_TASKS),
        "output_file": Opt(PATH),
        "too_big": Bool(),
        "bytes": COUNT,
    }


@dataclass(slots=True)
class AttemptProgress(Record):
    attempt: int
    fraction: float
    FIELDS: ClassVar[dict[str, Kind]] = {"attempt": COUNT, "fraction": Num(0.0, 1.0)}


@dataclass(slots=True)
class HeldOutput(Record):
    """A map output a (re-)registering worker still has on disk."""

    job: str
    task: int
    attempt: int
    FIELDS: ClassVar[dict[str, Kind]] = {"job": JOB, "task": COUNT, "attempt": COUNT}


@dataclass(slots=True)
class JobProgress(Record):
    state: str
    maps: int
    maps_done: int
    reduces: int
    reduces_done: int
    running: int
    elapsed: float
    workers: int
    FIELDS: ClassVar[dict[str, Kind]] = {
        "state": NAME,
        "maps": COUNT,
        "maps_done": COUNT,
        "reduces": COUNT,
        "reduces_done": COUNT,
        "running": COUNT,
        "elapsed": SECONDS,
        "workers": COUNT,
    }


@dataclass(slots=True)
class Summary(Record):
    """A succeeded job's counters, stats and output files."""

    counters: dict[str, int]
    stats: dict[str, float]
    output_files: list[str]
    returned: bool
    FIELDS: ClassVar[dict[str, Kind]] = {
        "counters": DictOf(SIGNED, 100_000),
        "stats": DictOf(Num(-1e18, 1e18), 1000),
        "output_files": ListOf(PATH, MAX_REDUCE_TASKS),
        "returned": Bool(),
    }


@dataclass(slots=True)
class WorkerStatus(Record):
    id: str
    host: str
    pid: int
    slots: int
    running: int
    last_heartbeat: float
    shuffle: str
    FIELDS: ClassVar[dict[str, Kind]] = {
        "id": LABEL,
        "host": LABEL,
        "pid": COUNT,
        "slots": COUNT,
        "running": COUNT,
        "last_heartbeat": SECONDS,
        "shuffle": ENDPOINT,
    }


@dataclass(slots=True)
class LostWorker(Record):
    """A worker the master lost lately, and why (shown greyed out)."""

    id: str
    host: str
    pid: int
    slots: int
    lost_ago: float
    reason: str
    FIELDS: ClassVar[dict[str, Kind]] = {
        "id": LABEL,
        "host": LABEL,
        "pid": COUNT,
        "slots": COUNT,
        "lost_ago": SECONDS,
        "reason": Str(1000, printable=True),
    }


@dataclass(slots=True)
class JobStatus(Record):
    """One job as ``zmqmr status`` lists it; a finished one with its counters, stats, error."""

    id: str
    name: str
    progress: JobProgress
    counters: dict[str, int] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    error: ErrorInfo | None = None
    #: Seconds since it ended (a finished job).
    ended_ago: float | None = None
    FIELDS: ClassVar[dict[str, Kind]] = {
        "id": JOB,
        "name": LABEL,
        "progress": Obj(JobProgress),
        "counters": DictOf(SIGNED, 100_000),
        "stats": DictOf(Num(-1e18, 1e18), 1000),
        "error": Opt(Obj(ErrorInfo)),
        "ended_ago": Opt(SECONDS),
    }


@dataclass(slots=True)
class ClusterStatus(Record):
    """Workers, the jobs the master holds, then the finished jobs it remembers (newest last)."""

    workers: list[WorkerStatus]
    jobs: list[JobStatus]
    history: list[JobStatus] = field(default_factory=list)
    lost_workers: list[LostWorker] = field(default_factory=list)
    FIELDS: ClassVar[dict[str, Kind]] = {
        "workers": ListOf(Obj(WorkerStatus), 100_000),
        "jobs": ListOf(Obj(JobStatus), 100_000),
        "history": ListOf(Obj(JobStatus), 100_000),
        "lost_workers": ListOf(Obj(LostWorker), 10_000),
    }

    def flat(self) -> dict[str, Any]:
        """As JSON, with each job's progress merged into its row (``zmqmr status --json``)."""
        out = self.to_json()
        for j in out["jobs"] + out["history"]:
            j.update(j.pop("progress"))
        return out


OUTCOMES = frozenset({"running", "done", "failed", "cancelled", "lost", "preempted"})


@dataclass(slots=True)
class AttemptInfo(Record):
    """One attempt on a job's timeline; times are seconds since the job was submitted.

    ``start``: when it was assigned; ``began``: when it started running (an
    attempt queued behind another on its worker begins later), if known.
    ``shuffled``: when a reduce attempt had fetched its input (its shuffle
    ended). ``backup``: a speculative copy; ``rerun``: a re-execution of a map
    whose output was lost, or a retry after a failure.
    """

    attempt: int
    kind: str
    task: int
    worker: str
    start: float
    began: float | None = None
    end: float | None = None
    shuffled: float | None = None
    outcome: str = "running"
    backup: bool = False
    rerun: bool = False
    error: str = ""
    FIELDS: ClassVar[dict[str, Kind]] = {
        "attempt": COUNT,
        "kind": TASK_KIND,
        "task": COUNT,
        "worker": LABEL,
        "start": SECONDS,
        "began": Opt(SECONDS),
        "end": Opt(SECONDS),
        "shuffled": Opt(SECONDS),
        "outcome": Str(choices=OUTCOMES),
        "backup": Bool(),
        "rerun": Bool(),
        "error": Str(1000),
    }


@dataclass(slots=True)
class JobDetail(Record):
    """One job in detail: tasks by state, its attempts (the latest, up to a bound),
    and its failures with their errors."""

    status: JobStatus
    tasks: dict[str, int]
    attempts: list[AttemptInfo]
    failures: list[ErrorInfo]
    #: Attempts that ran but are no longer kept (the timeline keeps the latest).
    attempts_dropped: int = 0
    FIELDS: ClassVar[dict[str, Kind]] = {
        "status": Obj(JobStatus),
        "tasks": DictOf(COUNT, 16),
        "attempts": ListOf(Obj(AttemptInfo), 1_000_000),
        "failures": ListOf(Obj(ErrorInfo), 1000),
        "attempts_dropped": COUNT,
    }


@dataclass(slots=True)
class AttemptLog(Record):
    """What one attempt's user code wrote: the tails of its stdout, stderr and log records."""

    attempt: int
    kind: str
    task: int
    worker: str = ""
    outcome: str = ""
    stdout: str = ""
    stderr: str = ""
    log: str = ""
    #: Bytes dropped from the front of each stream (the tail is kept).
    dropped: int = 0
    FIELDS: ClassVar[dict[str, Kind]] = {
        "attempt": COUNT,
        "kind": TASK_KIND,
        "task": COUNT,
        "worker": LABEL,
        "outcome": NAME,
        "stdout": TEXT,
        "stderr": TEXT,
        "log": TEXT,
        "dropped": COUNT,
    }


@dataclass(slots=True)
class FetchPart(Record):
    map_task: int
    attempt: int
    offset: int = 0
    FIELDS: ClassVar[dict[str, Kind]] = {"map_task": COUNT, "attempt": COUNT, "offset": COUNT}


@dataclass(slots=True)
class ChunkPart(Record):
    """One segment's bytes from ``offset`` in the reply's blob; ``total`` is its length."""

    map_task: int
    offset: int
    total: int
    FIELDS: ClassVar[dict[str, Kind]] = {"map_task": COUNT, "offset": COUNT, "total": COUNT}


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
    """Both ways; from a worker it carries the progress of its running attempts."""

    progress: list[AttemptProgress] = field(default_factory=list)
    FIELDS: ClassVar[dict[str, Kind]] = {"progress": ListOf(Obj(AttemptProgress), 4096)}


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
    """Bytes of several map outputs' segments for one partition, from their offsets."""

    job: str
    partition: int
    parts: list[FetchPart]
    max_bytes: int
    FIELDS: ClassVar[dict[str, Kind]] = {
        "job": JOB,
        "partition": Int(0, MAX_REDUCE_TASKS),
        "parts": ListOf(Obj(FetchPart), MAX_FETCH_PARTS),
        "max_bytes": Int(1, 1 << 31),
    }

    def validate(self, where: str) -> None:
        if not self.parts:
            raise ProtocolError(f"{where}: no parts asked for")


@_message("CHUNKS", (0, MAX_FETCH_PARTS))
@dataclass(slots=True)
class Chunks(Message):
    """One blob per part, in the order asked; the answer may stop short of the parts
    asked for (at ``max_bytes``), and a part's blob may stop short of its end."""

    parts: list[ChunkPart]
    FIELDS: ClassVar[dict[str, Kind]] = {"parts": ListOf(Obj(ChunkPart), MAX_FETCH_PARTS)}

    def validate_blobs(self) -> None:
        if len(self.blobs) != len(self.parts):
            raise ProtocolError(f"CHUNKS: {len(self.blobs)} blobs for {len(self.parts)} parts")


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


_TYPES_BY_BYTES = {name.encode(): cls for name, cls in MESSAGES.items()}


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# Built once: json.dumps and json.loads build a new encoder or decoder on every
# call that passes an option.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def _loads(raw: bytes) -> Any:
    return _DECODER.decode(raw.decode("utf-8"))


def encode(msg: Message) -> list[bytes]:
    """Frames for one message."""
    lo, hi = msg.BLOBS
    if not lo <= len(msg.blobs) <= hi:
        raise ProtocolError(f"{msg.TYPE}: {len(msg.blobs)} blob frames, expected {lo}..{hi}")
    try:
        raw = _ENCODER.encode(msg.to_json()).encode()
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{msg.TYPE}: header is not JSON: {exc}") from exc
    return [VERSION, msg.TYPE.encode(), raw, *msg.blobs]


def decode(frames: Sequence[bytes | memoryview]) -> Message:
    """The message in ``frames``; raises ProtocolError if any part of it is malformed."""
    if len(frames) < 3:
        raise ProtocolError(f"{len(frames)} frames, expected at least 3")
    if len(frames) - 3 > MAX_BLOBS:
        raise ProtocolError(f"{len(frames)} frames is too many")
    version, raw_type, raw_header = (bytes(f) for f in frames[:3])
    if version != VERSION:
        raise ProtocolError(f"version frame {version[:16]!r}, expected {VERSION!r}")
    cls = _TYPES_BY_BYTES.get(raw_type)
    if cls is None:
        raise ProtocolError(f"unknown message type {raw_type[:32]!r}")
    lo, hi = cls.BLOBS
    if not lo <= len(frames) - 3 <= hi:
        raise ProtocolError(f"{cls.TYPE}: {len(frames) - 3} blob frames, expected {lo}..{hi}")
    if len(raw_header) > MAX_HEADER_BYTES:
        raise ProtocolError(f"{cls.TYPE}: header of {len(raw_header)} bytes is too large")
    try:
        header = _loads(raw_header)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"{cls.TYPE}: header is not JSON: {exc}") from exc
    try:
        msg = cls.from_json(header, FAST)
    except ProtocolError:
        msg = cls.from_json(header, cls.TYPE)  # again, for an error that names the field
    msg.blobs = [bytes(f) for f in frames[3:]]
    msg.validate_blobs()
    return msg


def job_of(frames: Sequence[bytes | memoryview]) -> str | None:
    """The job id a message that failed to decode names (any short string): so a
    malformed SUBMIT can be answered with REJECTED rather than silence."""
    if len(frames) < 3 or len(frames[2]) > MAX_HEADER_BYTES:
        return None
    try:
        header = _loads(bytes(frames[2]))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    job = header.get("job") if isinstance(header, dict) else None
    return job if isinstance(job, str) and len(job) <= MAX_NAME else None


def routed(identity: bytes, frames: list[bytes]) -> list[bytes]:
    """Frames for a ROUTER socket: the peer's identity, then the message."""
    return [identity, *frames]


#: libzmq's ZMQ_SNDMORE (part of its ABI); protocol.py does not import zmq.
_SNDMORE = 2
#: Frames at least this long are sent without a copy; shorter ones are copied,
#: which is cheaper than tracking a zero-copy frame.
ZERO_COPY_BYTES = 64 * 1024


def send_frames(sock: Any, frames: list[bytes], flags: int = 0) -> None:
    """Send one message's frames on a ZeroMQ socket.

    Frame by frame with plain int flags: pyzmq's ``send_multipart`` costs about
    twice as much per small frame (enum arithmetic and a Python-level call per
    frame), which is most of what a master spends sending an assignment.
    """
    send = sock.send
    more = flags | _SNDMORE
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        if len(frame) < ZERO_COPY_BYTES:
            send(frame, more if i < last else flags)
        else:
            send(frame, more if i < last else flags, copy=False)


def split_routed(frames: Sequence[bytes]) -> tuple[bytes, Message]:
    """The sender's identity and its message, from frames read off a ROUTER."""
    if len(frames) < 2:
        raise ProtocolError("routed message without an identity frame")
    return bytes(frames[0]), decode(frames[1:])


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


#: Executor -> worker: AttemptProgress, Done, Failed, FetchFailed.
#: Worker -> executor: RunAttempt, Relocate (while a reduce waits), DropJob.
