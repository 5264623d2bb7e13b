"""The wire format: every message zmqmr sends, as a typed object validated whole.

A message on a socket is a multipart frame list::

    [VERSION, TYPE, HEADER, *BLOBS]

VERSION is ``b"ZMQMR4"``; TYPE names the message class; HEADER is a JSON
object holding the message's fields; BLOBS are opaque byte frames (pickled
closures, in-memory records, encoded results). ``decode`` checks the header
whole, nested parts included (a job spec, an attempt's report, a map output's
location, an error): every field's type and range, no unknown field, no
missing one, no NaN or infinity, bounded lengths. What it returns is a typed
object; a message that does not fit raises ``ProtocolError``, and whoever
received it logs and drops it. Nothing here unpickles anything: blobs stay
bytes until a worker or a client decides to decode them. Between the master and
its workers several messages may travel as one BATCH (``pack``, ``decode_batch``).

The messages themselves (their classes, fields and checks) are in
``zmqmr.messages``, their nested parts in ``zmqmr.parts``; this module
re-exports both, so callers name ``protocol.Assign``. The worker and its
executors exchange the same objects over a pipe (pickled by multiprocessing),
so one set of types describes every exchange.

Over ROUTER sockets the peer identity comes first; ``split_routed`` and
``routed`` add and remove it. No other module builds or parses frame lists.
Imports: the standard library, ``zmqmr.errors``, ``zmqmr.records``,
``zmqmr.parts`` and ``zmqmr.messages`` only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError
from .messages import (  # noqa: F401 - re-exported: callers name protocol.Assign
    MAX_LOGS,
    MESSAGES,
    Accepted,
    AckJob,
    AskLogs,
    Assign,
    Bye,
    Cancel,
    CancelJob,
    Chunks,
    Done,
    DropJob,
    Failed,
    Fetch,
    FetchError,
    FetchFailed,
    GetLogs,
    Heartbeat,
    JobFailed,
    JobInfo,
    JobInfoReply,
    Logs,
    Message,
    Poll,
    Progress,
    Ready,
    Reconnect,
    Rejected,
    Relocate,
    Result,
    RunAttempt,
    StatusReply,
    StatusRequest,
    Submit,
    Welcome,
)
from .parts import (  # noqa: F401 - re-exported: the parts are the wire's too
    COUNT,
    ENDPOINT,
    ERROR_TEXT,
    JOB,
    JOB_ID,
    LABEL,
    MAX_BLOBS,
    MAX_COUNTERS,
    MAX_FETCH_PARTS,
    MAX_HEADER_BYTES,
    MAX_JOB_COUNTERS,
    MAX_MAP_TASKS,
    MAX_PATH,
    MAX_POLL_WAIT,
    MAX_REDUCE_TASKS,
    MAX_TEXT,
    NAME,
    OUTCOMES,
    PATH,
    SECONDS,
    SIGNED,
    STATUS_ERROR_TEXT,
    TASK_KIND,
    TEXT,
    AttemptInfo,
    AttemptLog,
    AttemptProgress,
    ClusterStatus,
    ErrorInfo,
    HeldOutput,
    JobDetail,
    JobProgress,
    JobSpec,
    JobStatus,
    Location,
    Locations,
    LostWorker,
    Report,
    Segment,
    Split,
    Summary,
    TaskSpec,
    WorkerStatus,
)
from .records import (
    FAST,
    MAX_NAME,
)

VERSION = b"ZMQMR4"  # 4: a HEARTBEAT carries seen


_TYPES_BY_BYTES = {name.encode(): cls for name, cls in MESSAGES.items()}
_TYPES_BY_NAME = dict(MESSAGES)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# Built once: json.dumps and json.loads build a new encoder or decoder on every
# call that passes an option.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_no_constants)


_SCAN = _DECODER.scan_once  # type: ignore[attr-defined] # set by JSONDecoder.__init__


def _loads(raw: bytes) -> Any:
    text = raw.decode("utf-8")
    try:  # the C scanner straight away: a header as zmqmr writes it, no space around it
        value, end = _SCAN(text, 0)
    except (StopIteration, ValueError):
        end = -1
    if end == len(text):
        return value
    return _DECODER.decode(text)  # anything else, as before (and its error)


def encode(msg: Message) -> list[bytes]:
    """Frames for one message."""
    lo, hi = msg.BLOBS
    if not lo <= len(msg.blobs) <= hi:
        raise ProtocolError(f"{msg.TYPE}: {len(msg.blobs)} blob frames, expected {lo}..{hi}")
    return [VERSION, msg.TYPE.encode(), _header_text(msg).encode(), *msg.blobs]


def _header_text(msg: Message) -> str:
    """The JSON text of ``msg``'s header."""
    try:
        if type(msg) is Assign:
            text = _assign_text(msg)
            if text is not None:
                return text
        elif type(msg) is Done:
            return _ENCODER.encode({"attempt": msg.attempt, "report": _report_json(msg.report)})
        return _ENCODER.encode(msg.to_json())
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{msg.TYPE}: header is not JSON: {exc}") from exc


#: The JSON text of the fields every map attempt of a job shares (an ASSIGN's spec
#: without its split), by those fields' values: built once per job, not per task.
_SHARED_SPECS: dict[tuple[Any, ...], str] = {}
_SHARED_SPECS_MAX = 256
_SHARED_SPEC_FIELDS = (
    "name",
    "num_reducers",
    "num_maps",
    "output_dir",
    "has_combiner",
    "result_limit",
)
_JSON_BOOL = {False: "false", True: "true"}


def _assign_text(a: Assign) -> str | None:
    """An ASSIGN header for the common case (a map attempt whose spec has only its
    split beyond the job's shared fields), made from the job's cached text and the
    few fields that differ; None for any other ASSIGN (encoded field by field).
    Decoding reads it as any header: fields left out take their defaults."""
    s = a.spec
    split = s.split
    if (
        a.kind != "map"
        or split is None
        or s.skip
        or s.track_records
        or s.partition is not None
        or s.locations
        or type(a.attempt) is not int
        or type(a.task) is not int
        or type(a.has_code) is not bool
        or type(a.has_records) is not bool
    ):
        return None
    key = (a.job, s.name, s.num_reducers, s.num_maps, s.output_dir, s.has_combiner, s.result_limit)
    shared = _SHARED_SPECS.get(key)
    if shared is None:
        if len(_SHARED_SPECS) >= _SHARED_SPECS_MAX:
            _SHARED_SPECS.clear()
        head = {"job": a.job, "kind": "map"}
        spec = {n: getattr(s, n) for n in _SHARED_SPEC_FIELDS}
        # '"job":...,"kind":"map","spec":{"name":...,"result_limit":N' (no closing brace)
        shared = _ENCODER.encode(head)[1:-1] + ',"spec":' + _ENCODER.encode(spec)[:-1]
        _SHARED_SPECS[key] = shared
    if (
        split.kind == "records"
        and split.path is None
        and split.start is None
        and split.end is None
        and split.paths is None
        and type(split.blob) is int
        and _ints(split.count, split.first)
    ):
        count = "" if split.count is None else f',"count":{split.count}'
        first = "" if split.first is None else f',"first":{split.first}'
        split_text = f'{{"kind":"records","blob":{split.blob}{count}{first}}}'
    else:
        split_text = _ENCODER.encode(split.to_json())
    return (
        f'{{"attempt":{a.attempt},"task":{a.task},{shared},"split":{split_text}}},'
        f'"has_code":{_JSON_BOOL[a.has_code]},"has_records":{_JSON_BOOL[a.has_records]}}}'
    )


#: A report's fields that hold their defaults are left out of a DONE (the decoder
#: fills them in): most of a small map's report, so a shorter header to read.
_REPORT_DEFAULTS = tuple(Report().to_json().items())


def _report_json(r: Report) -> dict[str, Any]:
    out = r.to_json()
    for name, default in _REPORT_DEFAULTS:
        value = out[name]
        if type(value) is type(default) and value == default:
            del out[name]
    return out


def _ints(*values: Any) -> bool:
    """Whether each value is an int or None (written as they are, no JSON encoder)."""
    return all(v is None or type(v) is int for v in values)


def _bytes(frame: bytes | memoryview) -> bytes:
    return frame if type(frame) is bytes else bytes(frame)


def decode(frames: Sequence[bytes | memoryview]) -> Message:
    """The message in ``frames``; raises ProtocolError if any part of it is malformed.
    A BATCH is refused here: ``decode_batch`` reads those."""
    if len(frames) < 3:
        raise ProtocolError(f"{len(frames)} frames, expected at least 3")
    if len(frames) - 3 > MAX_BLOBS:
        raise ProtocolError(f"{len(frames)} frames is too many")
    version, raw_type, raw_header = frames[0], frames[1], frames[2]
    if type(version) is not bytes or type(raw_type) is not bytes or type(raw_header) is not bytes:
        version, raw_type, raw_header = bytes(version), bytes(raw_type), bytes(raw_header)
    if version != VERSION:
        raise ProtocolError(f"version frame {version[:16]!r}, expected {VERSION!r}")
    cls = _TYPES_BY_BYTES.get(raw_type)
    if cls is None:
        if raw_type == BATCH:
            raise ProtocolError("a BATCH where one message was expected")
        raise ProtocolError(f"unknown message type {raw_type[:32]!r}")
    lo, hi = cls.BLOBS
    if not lo <= len(frames) - 3 <= hi:
        raise ProtocolError(f"{cls.TYPE}: {len(frames) - 3} blob frames, expected {lo}..{hi}")
    header = _header(raw_header, cls.TYPE)
    return _message_of(cls, header, [_bytes(f) for f in frames[3:]] if len(frames) > 3 else [])


def _header(raw: bytes, what: str) -> Any:
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"{what}: header of {len(raw)} bytes is too large")
    try:
        return _loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what}: header is not JSON: {exc}") from exc


def _message_of(cls: type[Message], header: Any, blobs: list[bytes]) -> Message:
    try:
        msg = cls.from_json(header, FAST)
    except ProtocolError:
        msg = cls.from_json(header, cls.TYPE)  # again, for an error that names the field
    msg.blobs = blobs
    msg.validate_blobs()
    return msg


# -- batches -------------------------------------------------------------------------
#
# Between the master and its workers, the messages of one loop turn for one peer
# travel as one ZeroMQ message (fewer frames to send, receive and encrypt)::
#
#     [VERSION, b"BATCH", HEADER, BODY]
#
# HEADER is a JSON list with one ``[TYPE, header, [blob lengths]]`` per part, in
# order; BODY is every part's blobs, concatenated. Each part is checked as the
# same message alone would be; a BATCH holds no BATCH. A message with large blobs
# (a job's code, big records) travels alone, as every message may, and so do the
# messages of registering and leaving (READY, WELCOME, RECONNECT, BYE).

BATCH = b"BATCH"
#: Parts one BATCH may hold.
MAX_BATCH = 4096
#: A message whose blobs are larger than this is not put in a batch (no copy of it).
BATCH_BLOB_BYTES = 64 * 1024
#: Messages that always travel alone.
ALONE = frozenset({"READY", "WELCOME", "RECONNECT", "BYE"})


@dataclass(slots=True)
class Batch:
    """The messages of one ZeroMQ message, in order; ``errors``: why each part that
    did not decode was refused (the parts after it are still read)."""

    parts: list[Message]
    errors: list[str] = field(default_factory=list)


def encode_batch(msgs: Sequence[Message]) -> list[bytes]:
    """Frames for several messages as one BATCH (one message: its own frames)."""
    if len(msgs) == 1:
        return encode(msgs[0])
    if not 0 < len(msgs) <= MAX_BATCH:
        raise ProtocolError(f"a BATCH of {len(msgs)} parts, expected 1..{MAX_BATCH}")
    items: list[str] = []
    blobs: list[bytes] = []
    for msg in msgs:
        lo, hi = msg.BLOBS
        if not lo <= len(msg.blobs) <= hi:
            raise ProtocolError(f"{msg.TYPE}: {len(msg.blobs)} blob frames, expected {lo}..{hi}")
        lengths = ",".join([str(len(b)) for b in msg.blobs])
        items.append(f'["{msg.TYPE}",{_header_text(msg)},[{lengths}]]')
        blobs += msg.blobs
    return [VERSION, BATCH, f"[{','.join(items)}]".encode(), b"".join(blobs)]


def pack(msgs: Sequence[Message]) -> list[list[bytes]]:
    """The ZeroMQ messages (frame lists) that carry ``msgs`` in order: runs of small
    messages as batches, a message with large blobs (or of ``ALONE``) alone."""
    if len(msgs) == 1:  # alone, whatever it holds (most of a master's sends)
        return [encode(msgs[0])]
    out: list[list[bytes]] = []
    run: list[Message] = []
    for msg in msgs:
        if msg.TYPE in ALONE or (msg.blobs and sum(map(len, msg.blobs)) > BATCH_BLOB_BYTES):
            if run:
                out.append(encode_batch(run))
                run = []
            out.append(encode(msg))
            continue
        run.append(msg)
        if len(run) == MAX_BATCH:
            out.append(encode_batch(run))
            run = []
    if run:
        out.append(encode_batch(run))
    return out


def decode_batch(frames: Sequence[bytes | memoryview]) -> Batch:
    """The messages in ``frames``: a BATCH's parts, or the one message they hold.

    Raises ProtocolError if the envelope is malformed (or the one message is);
    a malformed part is left out, its error in ``errors``."""
    if len(frames) < 2 or _bytes(frames[1]) != BATCH:
        return Batch([decode(frames)])
    if len(frames) != 4:
        raise ProtocolError(f"BATCH: {len(frames)} frames, expected 4")
    version, _, raw_header, body = (_bytes(f) for f in frames)
    if version != VERSION:
        raise ProtocolError(f"version frame {version[:16]!r}, expected {VERSION!r}")
    items = _header(raw_header, "BATCH")
    if type(items) is not list or not 0 < len(items) <= MAX_BATCH:
        raise ProtocolError(f"BATCH: the header must be a list of 1..{MAX_BATCH} parts")
    total = 0
    for item in items:  # the envelope whole first: blob lengths must add up to the body
        if type(item) is not list or len(item) != 3 or type(item[2]) is not list:
            raise ProtocolError("BATCH: a part must be [type, header, [blob lengths]]")
        for n in item[2]:
            if type(n) is not int or n < 0:
                raise ProtocolError("BATCH: a blob length must be an int >= 0")
            total += n
    if total != len(body):
        raise ProtocolError(f"BATCH: blob lengths add up to {total}, the body has {len(body)}")
    batch = Batch([])
    at = 0
    for i, (raw_type, header, lengths) in enumerate(items):
        blobs = []
        for n in lengths:
            blobs.append(body[at : at + n])
            at += n
        cls = _TYPES_BY_NAME.get(raw_type) if type(raw_type) is str else None
        try:
            if cls is None:
                what = raw_type[:32] if type(raw_type) is str else type(raw_type).__name__
                raise ProtocolError(f"unknown message type {what!r}")
            lo, hi = cls.BLOBS
            if not lo <= len(blobs) <= hi:
                raise ProtocolError(f"{cls.TYPE}: {len(blobs)} blob frames, expected {lo}..{hi}")
            batch.parts.append(_message_of(cls, header, blobs))
        except ProtocolError as exc:
            batch.errors.append(f"BATCH part {i}: {exc}")
    return batch


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


def recv_frames(sock: Any, flags: int = 0) -> list[bytes]:
    """One message's frames from a ZeroMQ socket (raises as ``sock.recv`` does).

    Each frame is read as a zmq.Frame, whose ``more`` says whether another
    follows, then copied to bytes: pyzmq's ``recv_multipart`` asks the socket's
    RCVMORE option after every frame, making an enum of the option each time.
    """
    recv = sock.recv
    frame = recv(flags, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = recv(flags, copy=False)
        frames.append(frame.bytes)
    return frames


def split_routed(frames: Sequence[bytes]) -> tuple[bytes, Message]:
    """The sender's identity and its message, from frames read off a ROUTER."""
    if len(frames) < 2:
        raise ProtocolError("routed message without an identity frame")
    return bytes(frames[0]), decode(frames[1:])
