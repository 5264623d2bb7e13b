"""The nested parts of zmqmr's messages, and the wire's limits.

Typed records (``zmqmr.records``) that messages carry inside their JSON header:
a job's spec and splits, a task's spec, an attempt's report and segments, a map
output's location, an error, progress and status views. ``zmqmr.protocol``
declares the messages themselves, frames them and re-exports everything here,
so other modules name these as ``protocol.TaskSpec`` and so on.
Imports: the standard library, ``zmqmr.errors`` and ``zmqmr.records`` only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import ProtocolError
from .records import (
    MAX_INT,
    MAX_NAME,
    Bool,
    DictOf,
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
#: Characters of each text of an error (its message, traceback, output tail): a
#: status or job detail carries dozens of errors, and a character may take 12 bytes
#: on the wire (JSON escapes what is not ASCII).
ERROR_TEXT = 16 * 1024
#: ... and of an error shown in a job's status (a status lists up to 100 finished jobs).
STATUS_ERROR_TEXT = 4096
#: Segments one FETCH may ask for; counters one attempt may report.
MAX_FETCH_PARTS = 1024
MAX_COUNTERS = 1024
#: Counter names one job keeps (its totals: ``tables.add_counters``).
MAX_JOB_COUNTERS = 100_000

#: Job ids: what a client may name a job (they become directory names on workers).
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


# -- nested parts ------------------------------------------------------------------

JOB = Str(64, pattern=JOB_ID)
NAME = Str(MAX_NAME)
#: A name shown to people: a job's name, a worker's host.
LABEL = Str(MAX_NAME, printable=True)
PATH = Str(MAX_PATH)
TEXT = Str(MAX_TEXT)
#: An address a peer connects to (config.check_endpoint's form without bind's wildcards):
#: tcp://HOST:PORT, PORT 1-65535, or ipc://PATH.
ENDPOINT = Str(
    300,
    pattern=re.compile(
        r"tcp://[^\s/*][^\s/]*:(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}"
        r"|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])|ipc://\S(?:.*\S)?",
        re.DOTALL,
    ),
)
TASK_KIND = Str(choices=frozenset({"map", "reduce"}))
COUNT = Int()
SIGNED = Int(-MAX_INT, MAX_INT)
#: A job's counter total: a sum of one SIGNED value per task, so it may pass int64.
TOTAL = Int(
    -MAX_INT * (MAX_MAP_TASKS + MAX_REDUCE_TASKS), MAX_INT * (MAX_MAP_TASKS + MAX_REDUCE_TASKS)
)
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
        "message": Str(ERROR_TEXT),
        "traceback": Str(ERROR_TEXT),
        "task": NAME,
        "user_message": Str(ERROR_TEXT),
        "log": Str(ERROR_TEXT),
    }

    def __post_init__(self) -> None:
        # Made anywhere (the master prefixes a task's error with its own words): cut to
        # what the wire takes, so no error can make a message every peer refuses.
        self.cut(ERROR_TEXT)

    def cut(self, n: int) -> ErrorInfo:
        """Every text at most ``n`` characters (a traceback's and an output's tail); self.
        (A slice of a str already short enough is that str: nothing is copied.)"""
        self.type, self.task = self.type[:MAX_NAME], self.task[:MAX_NAME]
        self.message, self.user_message = self.message[:n], self.user_message[:n]
        self.traceback, self.log = self.traceback[-n:], self.log[-n:]
        return self

    def trimmed(self, n: int) -> ErrorInfo:
        """A copy, every text at most ``n`` characters."""
        return ErrorInfo(
            self.type, self.message, self.traceback, self.task, self.user_message, self.log
        ).cut(n)

    @classmethod
    def make(cls, type_name: str, message: str, traceback: str = "", **extra: str) -> ErrorInfo:
        """An ErrorInfo (``extra``: ``task``, ``user_message``, ``log``); like the
        constructor, it cuts every text to what the wire takes."""
        return cls(type_name, message, traceback, **extra)


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

    def to_json(self) -> dict[str, Any]:  # only the fields its kind has
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "records":
            out["blob"] = self.blob
            if self.count is not None:
                out["count"] = self.count
            if self.first is not None:
                out["first"] = self.first
            if self.path is None and self.start is None and self.end is None and self.paths is None:
                return out
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

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A reduce's spec holds one per map output, pickled to its executor: by
        # position, in half the time and bytes of a slotted dataclass's default.
        return Location, (self.map_task, self.attempt, self.address, self.size, self.groups)


@dataclass(slots=True, eq=False)
class Locations(Record):
    """A reduce's segments by column: segment ``i`` is map task ``maps[i]``'s output
    of attempt ``attempts[i]``, served at ``addresses[servers[i]]``, ``sizes[i]``
    bytes in ``groups[i]`` groups.

    One list of ints per field instead of one ``Location`` per segment: a reduce
    at large R has a segment of a key or two from every map output, and a record
    each would cost more to build, encode, check and pickle than the key itself.
    Iterating gives ``Location`` records; one equals another (or a list of
    ``Location``) when it names the same segments in the same order.
    """

    addresses: list[str] = field(default_factory=list)
    maps: list[int] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    servers: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    FIELDS: ClassVar[dict[str, Kind]] = {
        "addresses": ListOf(ENDPOINT, MAX_MAP_TASKS),
        "maps": Ints(MAX_MAP_TASKS),
        "attempts": Ints(MAX_MAP_TASKS),
        "servers": Ints(MAX_MAP_TASKS),
        "sizes": Ints(MAX_MAP_TASKS),
        "groups": Ints(MAX_MAP_TASKS),
    }

    def validate(self, where: str) -> None:
        n = len(self.maps)
        if not len(self.attempts) == len(self.servers) == len(self.sizes) == len(self.groups) == n:
            raise ProtocolError(f"{where}: location columns of different lengths")
        if len(set(self.maps)) != n:
            raise ProtocolError(f"{where}: a map task located twice")
        if n and max(self.servers) >= len(self.addresses):
            raise ProtocolError(f"{where}: a server index past the addresses")

    @classmethod
    def of(cls, locations: Iterable[Location]) -> Locations:
        out = cls()
        index: dict[str, int] = {}
        for loc in locations:
            server = index.get(loc.address)
            if server is None:
                server = index[loc.address] = len(out.addresses)
                out.addresses.append(loc.address)
            out.add(loc.map_task, loc.attempt, server, loc.size, loc.groups)
        return out

    def add(self, map_task: int, attempt: int, server: int, size: int, groups: int) -> None:
        self.maps.append(map_task)
        self.attempts.append(attempt)
        self.servers.append(server)
        self.sizes.append(size)
        self.groups.append(groups)

    def __len__(self) -> int:
        return len(self.maps)

    def __iter__(self) -> Iterator[Location]:
        addresses = self.addresses
        for m, a, w, n, g in zip(self.maps, self.attempts, self.servers, self.sizes, self.groups):
            yield Location(m, a, addresses[w], n, g)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Locations | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # pickled by position (to the executor), in fewer bytes than by field name
        return Locations, (
            self.addresses,
            self.maps,
            self.attempts,
            self.servers,
            self.sizes,
            self.groups,
        )


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
    locations: Locations = field(default_factory=Locations)
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
        "locations": Obj(Locations),
    }

    def __post_init__(self) -> None:
        if type(self.locations) is list:  # built from Location records (tests, tools)
            self.locations = Locations.of(self.locations)

    def validate(self, where: str) -> None:
        if self.locations.maps and max(self.locations.maps) >= self.num_maps:
            raise ProtocolError(f"{where}: a location names a map task past num_maps")


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
    #: A reduce's part file, read line by line, gives its results exactly: every key
    #: and value a str with no tab or line break in it (``JobResult.items``).
    text_exact: bool = False
    bytes: int = 0
    #: Seconds the attempt ran, on its worker's clock, from taking a slot to its end
    #: (the worker fills it in; the master's own clock also counts queueing and trips).
    seconds: float | None = None
    FIELDS: ClassVar[dict[str, Kind]] = {
        "counters": DictOf(SIGNED, MAX_COUNTERS),
        "segments": ListOf(Obj(Segment), MAX_REDUCE_TASKS),
        "output_file": Opt(PATH),
        "too_big": Bool(),
        "text_exact": Bool(),
        "bytes": COUNT,
        "seconds": Opt(SECONDS),
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
    #: Not returned: every part file's lines are its results exactly (``Report.text_exact``).
    text_exact: bool = False
    FIELDS: ClassVar[dict[str, Kind]] = {
        "counters": DictOf(TOTAL, MAX_JOB_COUNTERS),
        "stats": DictOf(Num(-1e18, 1e18), 1000),
        "output_files": ListOf(PATH, MAX_REDUCE_TASKS),
        "returned": Bool(),
        "text_exact": Bool(),
    }


@dataclass(slots=True)
class WorkerStatus(Record):
    id: str
    host: str
    pid: int
    slots: int
    #: Attempts running on its slots, and attempts waiting there for a slot (prefetch).
    running: int
    queued: int
    last_heartbeat: float
    shuffle: str
    FIELDS: ClassVar[dict[str, Kind]] = {
        "id": LABEL,
        "host": LABEL,
        "pid": COUNT,
        "slots": COUNT,
        "running": COUNT,
        "queued": COUNT,
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
        "counters": DictOf(TOTAL, MAX_JOB_COUNTERS),
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

    def wire_bytes(self) -> int:
        """About the bytes its texts take in a message (JSON escapes what is not ASCII to
        6 or 12 bytes a character): what a reply of logs is bounded by."""
        return sum(len(json.dumps(t)) for t in (self.stdout, self.stderr, self.log)) + 256
