"""Settings and their defaults, in one place.

Cluster settings belong to the master and reach workers in the WELCOME reply,
so one value governs both ends of a heartbeat. Job settings travel with the
job. Only the standard library is imported here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DEFAULT_WORKER_PORT = 5555
DEFAULT_CLIENT_PORT = 5556
DEFAULT_WORKER_BIND = f"tcp://127.0.0.1:{DEFAULT_WORKER_PORT}"
DEFAULT_CLIENT_BIND = f"tcp://127.0.0.1:{DEFAULT_CLIENT_PORT}"

MiB = 1024 * 1024

# Split planning, for a job without an explicit split_size: enough map tasks to
# use the cluster, none so small that starting it costs more than running it.
#: Map tasks the planner aims for per slot of the cluster, when the input allows.
MAPS_PER_SLOT = 4
#: Slots assumed when the cluster's size is not known.
DEFAULT_SLOTS = 8
#: Text splits the planner makes hold at least this many bytes (a smaller file: one split)...
MIN_SPLIT_SIZE = 1 * MiB
#: ...and at most this many, unless MAX_MAP_TASKS needs larger ones.
MAX_SPLIT_SIZE = 32 * MiB
#: The largest text split the planner makes (what every job used before planning).
DEFAULT_SPLIT_SIZE = MAX_SPLIT_SIZE
#: WholeFiles: one file per map task, unless that makes more tasks than this.
MAX_WHOLE_FILE_TASKS = 4096
#: In-memory records are cut into splits of at most this many pickled bytes.
DEFAULT_RECORD_SPLIT_BYTES = 1 * MiB
#: The master accepts a job of at most this many map tasks (the paper's M = 200,000).
MAX_MAP_TASKS = 200_000
#: Results returned through the master (no output_dir) may total this much.
DEFAULT_RESULT_LIMIT = 64 * MiB


@dataclass(frozen=True)
class ClusterSettings:
    """What the master decides for every worker and job."""

    heartbeat_interval: float = 1.0
    worker_timeout: float = 10.0
    #: A worker on which this many attempts of one job failed gets no more of it.
    worker_job_failures: int = 3
    #: Results returned through the master may total this many bytes per job.
    result_limit: int = DEFAULT_RESULT_LIMIT
    #: No backup for an attempt younger than this, however slow it looks.
    speculation_min_seconds: float = 2.0
    #: A worker gets at most this many slots, whatever it claims.
    max_worker_slots: int = 64
    #: Queued attempts per slot a worker may hold while a job has more idle tasks
    #: than the cluster has free slots (0: never queue).
    prefetch: int = 1
    #: An attempt whose worker reports no progress for this many heartbeats, while
    #: other attempts of its phase progress, gets a backup elsewhere.
    stall_heartbeats: int = 5

    @property
    def stall_seconds(self) -> float:
        return max(self.stall_heartbeats * self.heartbeat_interval, self.speculation_min_seconds)

    def __post_init__(self) -> None:
        _positive("heartbeat_interval", self.heartbeat_interval)
        _positive("worker_timeout", self.worker_timeout)
        if self.worker_timeout <= self.heartbeat_interval:
            raise ValueError(
                f"worker_timeout ({self.worker_timeout}) must exceed "
                f"heartbeat_interval ({self.heartbeat_interval})"
            )
        _positive("worker_job_failures", self.worker_job_failures)
        _positive("result_limit", self.result_limit)
        _positive("speculation_min_seconds", self.speculation_min_seconds)
        _positive("max_worker_slots", self.max_worker_slots)
        _positive("stall_heartbeats", self.stall_heartbeats)
        if (
            isinstance(self.prefetch, bool)
            or not isinstance(self.prefetch, int)
            or self.prefetch < 0
        ):
            raise ValueError(f"prefetch must be an int >= 0, got {self.prefetch!r}")

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class WorkerSettings:
    """What one worker decides for itself."""

    slots: int = 1
    #: Map side: combine buffered values after this many have accumulated.
    combine_records: int = 100_000
    #: Map side: spill a sorted run to disk after this many buffered values.
    spill_records: int = 400_000
    #: Reduce side: fetched map outputs beyond this many bytes go to disk.
    reduce_memory: int = 64 * MiB
    #: Shuffle fetch: bytes per request, seconds per try, tries before giving up.
    fetch_chunk: int = 4 * MiB
    fetch_timeout: float = 5.0
    fetch_retries: int = 3
    #: Reconnect backoff when the master is silent: first wait, cap.
    reconnect_initial: float = 1.0
    reconnect_max: float = 32.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _positive(f.name, getattr(self, f.name))


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
