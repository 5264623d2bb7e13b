"""The master's tables: workers, attempts, tasks and jobs, as the state machine keeps them.

Plain data with a few derived properties; every change to them is made by
``MasterState`` (state.py), which holds the rules. Imports: the standard
library and ``zmqmr.policy``, ``.events``, ``.protocol`` and ``.records`` only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from . import policy
from .events import SendJobFailed, SendResult
from .protocol import MAX_JOB_COUNTERS, JobSpec, Report, Segment
from .records import printable

IDLE, RUNNING, DONE = "idle", "running", "done"
#: A map task the journal knows as completed, waiting for its worker to register again.
WAITING = "waiting"
MAP, REDUCE = "map", "reduce"
#: Job states. A job with an output_dir is "committing" between its last reduce and
#: the end of its output commit (zmqmr.commit).
QUEUED, ACTIVE, COMMITTING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "committing",
    "succeeded",
    "failed",
    "cancelled",
)
#: Finished jobs whose outcome no client has collected are kept up to this many
#: (and for ClusterSettings.result_ttl at most); their result bytes are in the shell's store.
KEEP_FINISHED = 1000
#: A record on which the mapper failed this many times is skipped (skip_bad_records).
BAD_RECORD_FAILURES = 2
#: Bad records one map task may skip; past them the task fails (a split this bad is
#: more likely the wrong input, or a mapper that fails on every record).
MAX_BAD_RECORDS = 1000
STATS = (
    "map_attempts",
    "reduce_attempts",
    "failed_attempts",
    "lost_attempts",
    "reexecuted_maps",
    "fetch_failures",
    "backups_launched",
    "backups_won",
    "backups_cancelled",
    "timeouts",
    "skipped_records",
    "preempted_reduces",
)


@dataclass(slots=True, eq=False)
class Worker:
    id: bytes
    slots: int
    shuffle: str
    host: str
    pid: int
    last_seen: float
    #: When any of its attempts last progressed or ended (or it joined).
    last_activity: float
    running: dict[int, Attempt] = field(default_factory=dict)
    has_code: set[str] = field(default_factory=set)
    failures: dict[str, int] = field(default_factory=dict)
    #: (job, map task) of the current map outputs on its disk.
    outputs: set[tuple[str, int]] = field(default_factory=set)

    #: "host:pid", for people; made once.
    name: str = field(init=False)
    #: ``name`` printable and bounded, for timelines and views; made once.
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"{self.host}:{self.pid}"
        self.label = printable(self.name)[:200]

    @property
    def load(self) -> int:
        return len(self.running)


@dataclass(slots=True, eq=False)
class Attempt:
    id: int
    job: Job
    task: Task
    worker: Worker
    start: float
    #: When it started running: at once on a free slot; a queued attempt when its
    #: worker first reports it running.
    began: float | None = None
    backup: bool = False
    progress: float = 0.0

    @property
    def kind(self) -> str:
        return self.task.kind


@dataclass(slots=True)
class MapOutput:
    worker: bytes
    attempt: int
    address: str
    segments: list[Segment]


@dataclass(slots=True, eq=False)
class Task:
    kind: str
    index: int
    status: str = IDLE
    running: list[Attempt] = field(default_factory=list)
    failures: int = 0
    attempts: int = 0
    #: Map: where the winning output lives.
    output: MapOutput | None = None
    #: Reduce: the encoded results, when they come back through the master.
    result: bytes | None = None
    #: Reduce: the one attempt approved to commit this partition (the first one done).
    approved: int | None = None
    report: Report | None = None
    duration: float = 0.0
    bad_records: dict[int, int] = field(default_factory=dict)
    #: The worker whose copy of this map output was lost: run it elsewhere if we can.
    lost_on: bytes | None = None
    #: WAITING: the output the journal knows (its attempt, shuffle address, report).
    recovered: tuple[int, str, Report] | None = None

    @property
    def name(self) -> str:
        return f"{self.kind} task {self.index}"


@dataclass(slots=True, eq=False)
class Job:
    id: str
    client: bytes
    spec: JobSpec
    code: bytes
    records: list[bytes]
    maps: list[Task]
    reduces: list[Task]
    submitted: float
    status: str = QUEUED
    started: float | None = None
    maps_done_at: float | None = None
    finished: float | None = None
    excluded: set[bytes] = field(default_factory=set)
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATS, 0))
    outcome: SendResult | SendJobFailed | None = None
    #: Idle tasks per phase, in the order they should run (re-executions first).
    idle: dict[str, deque[Task]] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=lambda: {MAP: 0, REDUCE: 0})
    #: Running attempts of either phase, oldest first, and how many of each phase.
    running: dict[int, Attempt] = field(default_factory=dict)
    n_running: dict[str, int] = field(default_factory=lambda: {MAP: 0, REDUCE: 0})
    durations: dict[str, policy.RunningMedian] = field(default_factory=dict)
    #: Per phase: how long its attempts ran on their workers (``Report.seconds``).
    run_seconds: dict[str, policy.RunningMedian] = field(
        default_factory=lambda: {MAP: policy.RunningMedian(), REDUCE: policy.RunningMedian()}
    )
    #: Per phase: whether an attempt was seen taking long (``policy.is_long``).
    long_seen: dict[str, bool] = field(default_factory=lambda: {MAP: False, REDUCE: False})
    #: Counters of the winning attempts, kept up to date as tasks complete or are lost.
    counters: dict[str, int] = field(default_factory=dict)
    shuffle_bytes: int = 0
    #: Per partition: map task -> its non-empty segment for that partition.
    segments: list[dict[int, Segment]] = field(default_factory=list)
    #: Workers that have its code or its files: told to drop them when it ends.
    holders: set[bytes] = field(default_factory=set)
    #: A CommitJob or AbortJob of its output_dir is being carried out: its outcome
    #: waits for it, and no other job may take the directory.
    output_busy: bool = False
    commit_started: float | None = None

    def tasks(self, kind: str) -> list[Task]:
        return self.maps if kind == MAP else self.reduces

    @property
    def maps_complete(self) -> bool:
        return self.done[MAP] == len(self.maps)

    @property
    def phase(self) -> str:
        return REDUCE if self.maps_complete else MAP

    @property
    def ended(self) -> bool:
        return self.outcome is not None


#: A job's counter: how many (task, counter) values its totals left out, past the
#: names a job keeps (``MAX_JOB_COUNTERS``, this one among them).
LEFT_OUT = "zmqmr.counter_values_left_out"


def add_counters(into: dict[str, int], counters: dict[str, int], sign: int) -> None:
    """Add (sign 1) or take back (-1) one task's counters to a job's totals. A job
    keeps at most ``MAX_JOB_COUNTERS`` names, so that its summary can be sent: a
    value of a name past them is left out, and counted in ``LEFT_OUT``."""
    for name, n in counters.items():
        if name in into or len(into) < MAX_JOB_COUNTERS - 1:
            into[name] = into.get(name, 0) + sign * n
        else:
            into[LEFT_OUT] = into.get(LEFT_OUT, 0) + sign
