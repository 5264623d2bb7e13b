"""The wire format: every message zmqmr sends over ZeroMQ, and its validation.

A message is a multipart frame list::

    [VERSION, TYPE, HEADER, *BLOBS]

VERSION is ``b"ZMQMR1"``; TYPE names the message; HEADER is a JSON object whose
fields are checked against the schema of that type; BLOBS are opaque byte
frames (pickled closures, in-memory records, encoded results). Nothing here
unpickles anything: blobs stay bytes until a worker or a client decides to
decode them. A message that does not fit its schema raises ``ProtocolError``,
and the receiver logs and drops it.

Over ROUTER sockets the peer identity comes first; ``split_routed`` and
``routed`` add and remove it. No other module builds or parses frame lists.
Imports: the standard library and ``zmqmr.errors`` only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError

VERSION = b"ZMQMR1"
#: Upper bound on a JSON header; job specs with many splits are the largest.
MAX_HEADER_BYTES = 64 * 1024 * 1024
#: Upper bound on frames in one message (a job's in-memory record splits).
MAX_BLOBS = 100_000

#: Longest a long poll may ask the master to hold its answer (seconds).
MAX_POLL_WAIT = 60.0

# Field kinds in schemas.
INT = "int"  # a non-negative int (ids, counts, offsets)
NUM = "num"  # an int or float
STR = "str"
BOOL = "bool"
LIST = "list"
DICT = "dict"
OPT_STR = "str|None"
WAIT = "wait"  # seconds, a number in [0, MAX_POLL_WAIT]


@dataclass(frozen=True)
class Schema:
    fields: dict[str, str]
    min_blobs: int = 0
    max_blobs: int = 0
    optional: dict[str, str] = field(default_factory=dict)  # checked when present


# -- worker <-> master --------------------------------------------------------
READY = "READY"  # worker registers: slots, shuffle address
WELCOME = "WELCOME"  # master answers READY with the cluster's timing
HEARTBEAT = "HEARTBEAT"  # both ways; from a worker it carries attempt progress
ASSIGN = "ASSIGN"  # run one attempt; blobs: [job code]? [split records]?
CANCEL = "CANCEL"  # stop an attempt and remove its files
RELOCATE = "RELOCATE"  # a map output a reducer needs has a new location
DROP_JOB = "DROP_JOB"  # the job ended: forget its code and delete its map outputs
RECONNECT = "RECONNECT"  # the master does not know this worker: register again
DONE = "DONE"  # an attempt succeeded; blobs: [encoded results]?
FAILED = "FAILED"  # an attempt failed
FETCH_FAILED = "FETCH_FAILED"  # a reducer cannot fetch one map output
BYE = "BYE"  # a worker is leaving

# -- client <-> master --------------------------------------------------------
SUBMIT = "SUBMIT"  # blobs: [job code, *split records]
ACCEPTED = "ACCEPTED"
REJECTED = "REJECTED"
POLL = "POLL"  # how is this job doing? answered by PROGRESS, RESULT or JOB_FAILED;
# with "wait": s, the answer waits up to s seconds for the job to end (a long poll)
PROGRESS = "PROGRESS"
RESULT = "RESULT"  # blobs: one encoded result per partition (or none)
JOB_FAILED = "JOB_FAILED"
CANCEL_JOB = "CANCEL_JOB"
STATUS = "STATUS"
STATUS_REPLY = "STATUS_REPLY"

# -- reducer <-> shuffle server ------------------------------------------------
FETCH = "FETCH"
CHUNK = "CHUNK"  # blobs: [bytes of the segment from offset]
FETCH_ERROR = "FETCH_ERROR"

SCHEMAS: dict[str, Schema] = {
    READY: Schema({"slots": INT, "shuffle": STR, "host": STR, "pid": INT}),
    WELCOME: Schema({"heartbeat_interval": NUM, "worker_timeout": NUM}),
    HEARTBEAT: Schema({"progress": LIST}),
    ASSIGN: Schema(
        {
            "attempt": INT,
            "job": STR,
            "kind": STR,
            "task": INT,
            "spec": DICT,
            "has_code": BOOL,
            "has_records": BOOL,
        },
        0,
        2,
    ),
    CANCEL: Schema({"attempt": INT}),
    RELOCATE: Schema({"attempt": INT, "map_task": INT, "location": DICT}),
    DROP_JOB: Schema({"job": STR}),
    RECONNECT: Schema({}),
    DONE: Schema({"attempt": INT, "info": DICT}, 0, 1),
    FAILED: Schema({"attempt": INT, "kind": STR, "error": DICT}),
    FETCH_FAILED: Schema({"attempt": INT, "map_task": INT, "map_attempt": INT, "reason": STR}),
    BYE: Schema({}),
    SUBMIT: Schema({"job": STR, "spec": DICT}, 1, MAX_BLOBS),
    ACCEPTED: Schema({"job": STR}),
    REJECTED: Schema({"job": STR, "error": DICT}),
    POLL: Schema({"job": STR}, optional={"wait": WAIT}),
    PROGRESS: Schema({"job": STR, "progress": DICT}),
    RESULT: Schema({"job": STR, "summary": DICT}, 0, MAX_BLOBS),
    JOB_FAILED: Schema({"job": STR, "error": DICT}),
    CANCEL_JOB: Schema({"job": STR}),
    STATUS: Schema({}),
    STATUS_REPLY: Schema({"status": DICT}),
    FETCH: Schema(
        {
            "job": STR,
            "map_task": INT,
            "attempt": INT,
            "partition": INT,
            "offset": INT,
            "max_bytes": INT,
        }
    ),
    CHUNK: Schema({"total": INT, "offset": INT}, 1, 1),
    FETCH_ERROR: Schema({"reason": STR, "corrupt": BOOL}),
}

_TYPES_BY_BYTES = {name.encode(): name for name in SCHEMAS}


@dataclass(slots=True)
class Message:
    type: str
    header: dict[str, Any]
    blobs: list[bytes] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.header[name]


def _check_field(mtype: str, name: str, kind: str, value: Any) -> None:
    ok: bool
    if kind == INT:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif kind == NUM:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == STR:
        ok = isinstance(value, str)
    elif kind == OPT_STR:
        ok = value is None or isinstance(value, str)
    elif kind == BOOL:
        ok = isinstance(value, bool)
    elif kind == LIST:
        ok = isinstance(value, list)
    elif kind == DICT:
        ok = isinstance(value, dict)
    elif kind == WAIT:
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and 0 <= value <= MAX_POLL_WAIT
        )
    else:  # pragma: no cover - a schema typo
        raise AssertionError(kind)
    if not ok:
        if kind == WAIT:
            want, got = f"a number of seconds in [0, {MAX_POLL_WAIT:g}]", f"{value!r:.40}"
        else:
            want, got = kind, type(value).__name__
        raise ProtocolError(f"{mtype}: field {name!r} must be {want}, got {got}")


def _check(mtype: str, header: Any, nblobs: int) -> Schema:
    schema = SCHEMAS.get(mtype)
    if schema is None:
        raise ProtocolError(f"unknown message type {mtype!r}")
    if not isinstance(header, dict):
        raise ProtocolError(f"{mtype}: header must be a JSON object")
    for name, kind in schema.fields.items():
        if name not in header:
            raise ProtocolError(f"{mtype}: missing field {name!r}")
        _check_field(mtype, name, kind, header[name])
    for name, kind in schema.optional.items():
        if name in header:
            _check_field(mtype, name, kind, header[name])
    if not schema.min_blobs <= nblobs <= schema.max_blobs:
        raise ProtocolError(
            f"{mtype}: {nblobs} blob frames, expected {schema.min_blobs}..{schema.max_blobs}"
        )
    return schema


def encode(
    mtype: str, header: dict[str, Any] | None = None, blobs: Sequence[bytes] = ()
) -> list[bytes]:
    """Frames for one message; raises ProtocolError if it breaks its schema."""
    header = {} if header is None else header
    _check(mtype, header, len(blobs))
    try:
        raw = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{mtype}: header is not JSON: {exc}") from exc
    return [VERSION, mtype.encode(), raw, *blobs]


def decode(frames: Sequence[bytes | memoryview]) -> Message:
    """The message in ``frames``; raises ProtocolError if it is malformed."""
    if len(frames) < 3:
        raise ProtocolError(f"{len(frames)} frames, expected at least 3")
    if len(frames) - 3 > MAX_BLOBS:
        raise ProtocolError(f"{len(frames)} frames is too many")
    version, raw_type, raw_header = (bytes(f) for f in frames[:3])
    if version != VERSION:
        raise ProtocolError(f"version frame {version[:16]!r}, expected {VERSION!r}")
    mtype = _TYPES_BY_BYTES.get(raw_type)
    if mtype is None:
        raise ProtocolError(f"unknown message type {raw_type[:32]!r}")
    if len(raw_header) > MAX_HEADER_BYTES:
        raise ProtocolError(f"{mtype}: header of {len(raw_header)} bytes is too large")
    try:
        header = json.loads(raw_header)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"{mtype}: header is not JSON: {exc}") from exc
    blobs = [bytes(f) for f in frames[3:]]
    _check(mtype, header, len(blobs))
    return Message(mtype, header, blobs)


def routed(identity: bytes, frames: list[bytes]) -> list[bytes]:
    """Frames for a ROUTER socket: the peer's identity, then the message."""
    return [identity, *frames]


def split_routed(frames: Sequence[bytes]) -> tuple[bytes, Message]:
    """The sender's identity and its message, from frames read off a ROUTER."""
    if len(frames) < 2:
        raise ProtocolError("routed message without an identity frame")
    return bytes(frames[0]), decode(frames[1:])


def error_dict(type_name: str, message: str, traceback: str = "") -> dict[str, str]:
    """The shape of every error carried in a header."""
    return {"type": type_name, "message": message, "traceback": traceback}


def check_error(value: Any) -> dict[str, str]:
    """An error dict from a header, with missing fields filled in."""
    if not isinstance(value, dict):
        raise ProtocolError("error must be an object")
    return {k: str(value.get(k, "")) for k in ("type", "message", "traceback")}
