"""The wire format: every message type round-trips, and every malformed frame list is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from zmqmr import protocol
from zmqmr.errors import ProtocolError

ERR = {"type": "ValueError", "message": "boom", "traceback": "Traceback ..."}

#: A valid header and blob list for every message type.
SAMPLES: dict[str, tuple[dict[str, Any], list[bytes]]] = {
    protocol.READY: (
        {"slots": 2, "shuffle": "tcp://127.0.0.1:7001", "host": "lab-01", "pid": 42},
        [],
    ),
    protocol.WELCOME: ({"heartbeat_interval": 1, "worker_timeout": 10.5}, []),
    protocol.HEARTBEAT: ({"progress": [[3, 0.5], [4, 1.0]]}, []),
    protocol.ASSIGN: (
        {
            "attempt": 7,
            "job": "j1",
            "kind": "map",
            "task": 0,
            "spec": {"split": {"kind": "text", "path": "/x", "start": 0, "end": 10}},
            "has_code": True,
            "has_records": True,
        },
        [b"code", b"records"],
    ),
    protocol.CANCEL: ({"attempt": 7}, []),
    protocol.RELOCATE: (
        {"attempt": 9, "map_task": 1, "location": {"address": "tcp://h:1", "attempt": 12}},
        [],
    ),
    protocol.DROP_JOB: ({"job": "j1"}, []),
    protocol.RECONNECT: ({}, []),
    protocol.DONE: ({"attempt": 7, "info": {"sizes": [1, 2]}}, [b"\x00result"]),
    protocol.FAILED: ({"attempt": 7, "kind": "user", "error": ERR, "record": 3}, []),
    protocol.FETCH_FAILED: (
        {"attempt": 9, "map_task": 1, "map_attempt": 7, "reason": "timeout"},
        [],
    ),
    protocol.BYE: ({}, []),
    protocol.SUBMIT: ({"job": "j1", "spec": {"num_reducers": 2}}, [b"code", b"r0", b"r1"]),
    protocol.ACCEPTED: ({"job": "j1"}, []),
    protocol.REJECTED: ({"job": "j1", "error": ERR}, []),
    protocol.POLL: ({"job": "j1"}, []),
    protocol.PROGRESS: ({"job": "j1", "progress": {"maps": 3, "maps_done": 1}}, []),
    protocol.RESULT: ({"job": "j1", "summary": {"counters": {"c": 1}}}, [b"p0", b"", b"p2"]),
    protocol.JOB_FAILED: ({"job": "j1", "error": ERR}, []),
    protocol.CANCEL_JOB: ({"job": "j1"}, []),
    protocol.STATUS: ({}, []),
    protocol.STATUS_REPLY: ({"status": {"workers": [], "jobs": []}}, []),
    protocol.FETCH: (
        {"job": "j1", "map_task": 1, "attempt": 7, "partition": 0, "offset": 0, "max_bytes": 4096},
        [],
    ),
    protocol.CHUNK: ({"total": 100, "offset": 0}, [b"\x01" * 100]),
    protocol.FETCH_ERROR: ({"reason": "missing", "corrupt": False}, []),
}


def frames_of(mtype: str, header: Any, blobs: list[bytes] | None = None) -> list[bytes]:
    """Frames built by hand, bypassing encode's checks."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return [protocol.VERSION, mtype.encode(), raw, *(blobs or [])]


def test_every_message_type_has_a_sample():
    assert set(SAMPLES) == set(protocol.SCHEMAS)


@pytest.mark.parametrize("mtype", sorted(SAMPLES))
def test_message_round_trips_through_encode_and_decode(mtype):
    header, blobs = SAMPLES[mtype]
    frames = protocol.encode(mtype, header, blobs)
    assert frames[0] == protocol.VERSION and frames[1] == mtype.encode()
    assert all(isinstance(f, bytes) for f in frames)
    msg = protocol.decode(frames)
    assert msg.type == mtype
    assert msg.header == header
    assert msg.blobs == blobs
    for name in protocol.SCHEMAS[mtype].fields:
        assert msg[name] == header[name]


def test_decode_accepts_memoryview_frames():
    header, blobs = SAMPLES[protocol.CHUNK]
    frames = [memoryview(f) for f in protocol.encode(protocol.CHUNK, header, blobs)]
    msg = protocol.decode(frames)
    assert msg.blobs == blobs and isinstance(msg.blobs[0], bytes)


def test_encode_without_header_is_an_empty_object():
    assert protocol.decode(protocol.encode(protocol.BYE)).header == {}


# -- malformed frames ------------------------------------------------------------------


@pytest.mark.parametrize("wait", [-1, 61, "1", True, None, float("nan"), float("inf"), [1]])
def test_poll_wait_must_be_seconds_in_range(wait):
    with pytest.raises(ProtocolError, match="wait"):
        protocol.decode(frames_of(protocol.POLL, {"job": "j1", "wait": wait}))
    with pytest.raises(ProtocolError, match="wait"):
        protocol.encode(protocol.POLL, {"job": "j1", "wait": wait})


@pytest.mark.parametrize("wait", [0, 0.5, 2, 60])
def test_poll_wait_round_trips(wait):
    msg = protocol.decode(protocol.encode(protocol.POLL, {"job": "j1", "wait": wait}))
    assert msg["wait"] == wait


def test_wrong_version_is_refused():
    frames = protocol.encode(protocol.POLL, {"job": "j1"})
    with pytest.raises(ProtocolError, match="version"):
        protocol.decode([b"ZMQMR0", *frames[1:]])


def test_unknown_type_is_refused():
    with pytest.raises(ProtocolError, match="unknown message type"):
        protocol.decode(frames_of("SHUTDOWN_EVERYTHING", {}))


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_few_frames_are_refused(n):
    frames = protocol.encode(protocol.BYE)[:n]
    with pytest.raises(ProtocolError, match="frames"):
        protocol.decode(frames)


@pytest.mark.parametrize(
    "raw", [b"{not json", b"", b"\xff\xfe\x00", b'{"job": "j1"', b"NaN1"], ids=repr
)
def test_header_that_is_not_json_is_refused(raw):
    with pytest.raises(ProtocolError, match="not JSON"):
        protocol.decode(frames_of(protocol.POLL, raw))


def test_deeply_nested_header_is_refused_not_a_crash():
    deep = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(ProtocolError):
        protocol.decode(frames_of(protocol.POLL, deep))


@pytest.mark.parametrize("value", [[1, 2], "job", 3, None, True], ids=repr)
def test_header_that_is_not_an_object_is_refused(value):
    with pytest.raises(ProtocolError, match="JSON object"):
        protocol.decode(frames_of(protocol.POLL, value))


@pytest.mark.parametrize("mtype", sorted(t for t in SAMPLES if protocol.SCHEMAS[t].fields))
def test_each_missing_field_is_refused(mtype):
    header, blobs = SAMPLES[mtype]
    for name in protocol.SCHEMAS[mtype].fields:
        broken = {k: v for k, v in header.items() if k != name}
        with pytest.raises(ProtocolError, match=f"missing field '{name}'"):
            protocol.decode(frames_of(mtype, broken, blobs))


@pytest.mark.parametrize(
    ("mtype", "field", "value"),
    [
        (protocol.CANCEL, "attempt", True),  # bool is not an int on the wire
        (protocol.CANCEL, "attempt", -1),
        (protocol.CANCEL, "attempt", 1.5),
        (protocol.CANCEL, "attempt", 2.0),
        (protocol.CANCEL, "attempt", "7"),
        (protocol.CANCEL, "attempt", None),
        (protocol.READY, "slots", False),
        (protocol.READY, "shuffle", 5),
        (protocol.WELCOME, "heartbeat_interval", True),
        (protocol.WELCOME, "worker_timeout", "10"),
        (protocol.ASSIGN, "has_code", 1),
        (protocol.ASSIGN, "spec", []),
        (protocol.HEARTBEAT, "progress", {}),
        (protocol.FETCH, "offset", -5),
        (protocol.FETCH_ERROR, "corrupt", "no"),
        (protocol.POLL, "job", None),
    ],
    ids=lambda v: repr(v) if not isinstance(v, str) else v,
)
def test_field_of_wrong_type_is_refused(mtype, field, value):
    header, blobs = SAMPLES[mtype]
    frames = frames_of(mtype, {**header, field: value}, blobs)
    with pytest.raises(ProtocolError, match=f"field '{field}'"):
        protocol.decode(frames)


@pytest.mark.parametrize(
    ("mtype", "nblobs"),
    [
        (protocol.POLL, 1),
        (protocol.ASSIGN, 3),
        (protocol.DONE, 2),
        (protocol.SUBMIT, 0),
        (protocol.CHUNK, 0),
        (protocol.CHUNK, 2),
    ],
)
def test_wrong_blob_count_is_refused(mtype, nblobs):
    header, _ = SAMPLES[mtype]
    with pytest.raises(ProtocolError, match="blob"):
        protocol.decode(frames_of(mtype, header, [b"x"] * nblobs))


def test_extra_header_fields_are_kept():
    msg = protocol.decode(frames_of(protocol.POLL, {"job": "j1", "trace": "abc"}))
    assert msg.header["trace"] == "abc"


# -- encode refuses what decode would refuse -------------------------------------------


@pytest.mark.parametrize(
    ("mtype", "header", "blobs"),
    [
        ("NOPE", {}, []),
        (protocol.CANCEL, {}, []),
        (protocol.CANCEL, {"attempt": -1}, []),
        (protocol.CANCEL, {"attempt": True}, []),
        (protocol.CHUNK, {"total": 1, "offset": 0}, []),
        (protocol.POLL, {"job": "j1"}, [b"extra"]),
        (protocol.PROGRESS, {"job": "j1", "progress": {"bad": {1, 2}}}, []),
        (protocol.PROGRESS, {"job": "j1", "progress": {"elapsed": float("nan")}}, []),
        (protocol.PROGRESS, {"job": "j1", "progress": {"x": b"bytes"}}, []),
    ],
    ids=[
        "unknown-type",
        "missing-field",
        "negative-int",
        "bool-int",
        "no-blob",
        "extra-blob",
        "set-inside",
        "nan-inside",
        "bytes-inside",
    ],
)
def test_encode_refuses_header_that_breaks_the_schema(mtype, header, blobs):
    with pytest.raises(ProtocolError):
        protocol.encode(mtype, header, blobs)


# -- routing ---------------------------------------------------------------------------


def test_routed_and_split_routed_round_trip():
    frames = protocol.encode(protocol.ACCEPTED, {"job": "j1"})
    wire = protocol.routed(b"\x00peer-7", frames)
    assert wire[0] == b"\x00peer-7" and wire[1:] == frames
    identity, msg = protocol.split_routed(wire)
    assert identity == b"\x00peer-7"
    assert (msg.type, msg.header) == (protocol.ACCEPTED, {"job": "j1"})


@pytest.mark.parametrize("frames", [[], [b"peer"]])
def test_split_routed_without_message_is_refused(frames):
    with pytest.raises(ProtocolError):
        protocol.split_routed(frames)


def test_split_routed_refuses_a_malformed_message_after_the_identity():
    with pytest.raises(ProtocolError, match="version"):
        protocol.split_routed([b"peer", b"BAD", b"POLL", b'{"job": "j1"}'])


# -- error dicts -----------------------------------------------------------------------


def test_check_error_fills_missing_fields_and_stringifies():
    assert protocol.check_error({"type": "X", "message": 5}) == {
        "type": "X",
        "message": "5",
        "traceback": "",
    }
    with pytest.raises(ProtocolError):
        protocol.check_error("boom")
    assert protocol.error_dict("T", "m") == {"type": "T", "message": "m", "traceback": ""}
