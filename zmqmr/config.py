"""Settings and their defaults, in one place; reading them and addresses from text.

Cluster settings belong to the master and reach workers in the WELCOME reply,
so one value governs both ends of a heartbeat. Job settings travel with the
job. ``coerce`` turns a value given as text (``--set NAME=VALUE``, a job
file's ``JOB`` dict) into a setting's declared type, sizes included
(``parse_size``); ``check_endpoint`` refuses a malformed ZeroMQ address
before any socket exists. Only the standard library is imported here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

DEFAULT_WORKER_PORT = 5555
DEFAULT_CLIENT_PORT = 5556
DEFAULT_WORKER_BIND = f"tcp://127.0.0.1:{DEFAULT_WORKER_PORT}"
DEFAULT_CLIENT_BIND = f"tcp://127.0.0.1:{DEFAULT_CLIENT_PORT}"
#: Where the master's dashboard listens (zmqmr.dashboard).
DEFAULT_HTTP = "127.0.0.1:8787"

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
    #: A finished job's outcome waits this many seconds for a client to collect it.
    result_ttl: float = 3600.0
    #: Result bytes kept in memory for clients, over all jobs; more go to disk.
    result_store_limit: int = 256 * MiB
    #: A worker gets at most this many slots, whatever it claims.
    max_worker_slots: int = 64
    #: Queued attempts per slot a worker may hold while a job has more idle tasks
    #: than the cluster has free slots (0: never queue).
    prefetch: int = 1
    #: ...and this many while the phase's typical task takes less than
    #: ``small_task_seconds`` (and no attempt of it was seen taking ten times that,
    #: ``policy.queue_depth``): tiny tasks then travel several to a message and an
    #: executor never waits a round trip (their tail behind a queue stays short).
    small_task_prefetch: int = 4
    small_task_seconds: float = 0.05
    #: An attempt whose worker reports no progress for this many heartbeats, while
    #: other attempts of its phase progress, gets a backup elsewhere.
    stall_heartbeats: int = 5
    #: A lone attempt quiet for this many typical task times of its phase gets a backup.
    speculation_quiet_factor: float = 3.0
    #: ...and so does one whose progress rate says it needs more than this many.
    speculation_late_factor: float = 2.0
    #: Finished jobs the master remembers after their outcome was collected (zmqmr status).
    history_jobs: int = 100

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
        _positive("result_ttl", self.result_ttl)
        _positive("result_store_limit", self.result_store_limit)
        _positive("max_worker_slots", self.max_worker_slots)
        _positive("stall_heartbeats", self.stall_heartbeats)
        _positive("speculation_quiet_factor", self.speculation_quiet_factor)
        _positive("speculation_late_factor", self.speculation_late_factor)
        _positive("history_jobs", self.history_jobs)
        _positive("small_task_seconds", self.small_task_seconds)
        for name in ("prefetch", "small_task_prefetch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")

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
    #: Sorted streams merged at once (map runs, reduce inputs); fewer when
    #: reduce_memory is small (zmqmr.merge). More than this merge in passes.
    merge_fanin: int = 16
    #: Shuffle fetch: bytes per request, seconds per try, tries before giving up.
    fetch_chunk: int = 4 * MiB
    fetch_timeout: float = 5.0
    fetch_retries: int = 3
    #: Reconnect backoff when the master is silent: first wait, cap.
    reconnect_initial: float = 1.0
    reconnect_max: float = 32.0
    #: Map side: an output of at most this many bytes is appended to its executor's
    #: pack instead of being a file of its own (zmqmr.packs); 0: every output a file.
    pack_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name == "pack_bytes" and type(self.pack_bytes) is int and self.pack_bytes == 0:
                continue
            _positive(f.name, getattr(self, f.name))


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


# -- values given as text ----------------------------------------------------------------

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])i?b?|b)?", re.IGNORECASE)
_MULTIPLES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def parse_size(text: str) -> int:
    """Bytes from ``"512"``, ``"512k"``, ``"64MB"``, ``"1MiB"``, ``"1.5G"``.

    A suffix is a power of 1024 whichever way it is spelt (``k``, ``KB``,
    ``KiB``; ``M``, ``MB``, ``MiB``; ``G``; ``T``), as Hadoop's, Java's and
    Docker's sizes are; case does not matter. Raises ValueError.
    """
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a size; e.g. 512k, 64MB, 1MiB, 1.5G")
    number, unit = m.groups()
    value = float(number) * (_MULTIPLES[unit.lower()] if unit else 1)
    if value != int(value):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


def _options(kind: Any) -> tuple[Any, ...]:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)


def describe(kind: Any) -> str:
    """A setting's type in words, for error messages."""
    words = {
        int: "a whole number (sizes such as 64MB are fine)",
        float: "a number",
        bool: "true or false",
        str: "text",
        type(None): "none",
    }
    return " or ".join(dict.fromkeys(words.get(o, "text") for o in _options(kind)))


def coerce(value: Any, kind: Any) -> Any:
    """``value`` as a setting of type ``kind`` (``int``, ``float | None``, ...).

    Text is read as the type wants it: ``none`` (or ``null``) wherever None
    is allowed, even in place of text; ``true``/``false`` (also yes/no,
    on/off, 1/0); numbers; and sizes (``parse_size``) where a whole number
    is wanted. A value of another type must already be one of
    ``kind``'s (an int does for a float; a bool never does for an int).
    Raises ValueError saying what was wanted.
    """
    options = _options(kind)
    text = value.strip().lower() if isinstance(value, str) else ""
    if type(None) in options and text in ("none", "null"):
        return None
    if isinstance(value, str) and str not in options:
        if bool in options and text in _TRUE + _FALSE:
            return text in _TRUE
        if int in options:
            try:
                return int(text)
            except ValueError:
                try:
                    return parse_size(text)
                except ValueError:
                    pass
        if float in options:
            try:
                number = float(text)
            except ValueError:
                pass
            else:
                if not math.isnan(number):
                    return number
        raise ValueError(f"needs {describe(kind)}, got {value!r}")
    if value is None and type(None) in options:
        return None
    if isinstance(value, bool):
        ok = bool in options
    elif isinstance(value, int):
        ok = int in options or float in options
    elif isinstance(value, float):
        ok = float in options
    else:
        ok = any(isinstance(value, o) for o in options if isinstance(o, type))
        ok = ok or (isinstance(value, os.PathLike) and any(o is str for o in options))
    if not ok:
        raise ValueError(f"needs {describe(kind)}, got {value!r}")
    return value


def setting_types(cls: Any) -> dict[str, Any]:
    """Name -> declared type of every field of a settings dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


# -- addresses ---------------------------------------------------------------------------


def _tcp_ok(rest: str, bind: bool) -> bool:
    host, sep, port = rest.rpartition(":")
    if not sep or not host or any(c.isspace() or c == "/" for c in host):
        return False
    if host == "*" and not bind:
        return False
    if bind and port == "*":
        return True
    return port.isdigit() and (1 if not bind else 0) <= int(port) <= 65535


def check_endpoint(address: object, what: str, *, bind: bool = False) -> str:
    """Return ``address`` if it is a ZeroMQ endpoint zmqmr can connect to (or bind).

    ``tcp://HOST:PORT`` (to bind, HOST may be ``*`` and PORT ``*`` for any
    free port) or ``ipc://PATH``; not ``inproc://``, which lives inside one
    ZeroMQ context while each zmqmr process has its own. Anything else
    raises ValueError at once, naming ``what`` and the form expected:
    ZeroMQ would refuse it later, and a socket it refused would keep its
    context from ever closing.
    """
    ok = False
    if isinstance(address, str):
        scheme, sep, rest = address.partition("://")
        if sep and scheme == "tcp":
            ok = _tcp_ok(rest, bind)
        elif sep and scheme == "ipc":
            ok = bool(rest.strip()) and rest == rest.strip()
    if ok:
        return str(address)
    if bind:
        form = "tcp://HOST:PORT (HOST may be *, PORT * for any free port) or ipc://PATH"
    else:
        form = "tcp://HOST:PORT (such as tcp://127.0.0.1:5555) or ipc://PATH"
    subject = f"{what} {address!r}" if what else repr(address)
    hint = ""
    if isinstance(address, str) and "://" not in address and _tcp_ok(address, bind):
        hint = f"; did you mean tcp://{address}?"
    elif isinstance(address, str) and address.startswith("inproc://"):
        hint = " (inproc:// cannot reach another process)"
    raise ValueError(f"{subject} is not a ZeroMQ address: expected {form}{hint}")
