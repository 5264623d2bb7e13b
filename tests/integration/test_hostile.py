"""Hostile peers on real sockets: no message, and no liar, can kill or stall the cluster.

Raw DEALER and REQ sockets speak, or abuse, the wire format at the master's
two ports and at a worker's shuffle server. After every barrage the master
process is alive, ``Client.status()`` answers every client, and a real job on
the cluster's real workers gives exactly ``run_serial``'s answer.

Each barrage gets a cluster of its own (one starts in about half a second): if
a message kills the master or a shuffle server, only the test that sent it
fails, and the others still say what they prove. Sockets speak without CURVE
(``insecure=True``), so that frames reach the parsers rather than stopping at
the handshake.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from conftest import BOOKS, REPO, wc_mapper, wc_reducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import zmqmr
from zmqmr import protocol as p
from zmqmr import records, shuffle

FAST = dict(insecure=True, heartbeat_interval=0.2, worker_timeout=3.0)
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
#: The two smallest books: a job over them takes well under a second.
SMALL_BOOKS = [b for b in BOOKS if "being_ernest" in b or "metamorphosis" in b]
#: What a registered worker may send without being dropped.
WORKER_TYPES = frozenset({"READY", "HEARTBEAT", "DONE", "FAILED", "FETCH_FAILED", "LOGS", "BYE"})
#: A host name that no terminal, encoder or column width is ready for, yet a valid NAME.
HOSTILE_HOST = ("\ud800 evil\x1b[2J\r\n\x00\u202e" + "\U0001f4a3" * 300)[: records.MAX_NAME]
#: Seconds to wait for an answer the master gives at once.
REPLY_WAIT = 3.0
RANDOM_SEED = 20240601


# -- helpers -----------------------------------------------------------------------------


def wait_until(predicate, timeout=10.0, every=0.02, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what} not reached within {timeout}s")


def tail(text: str, n: int = 3000) -> str:
    """The end of a log, its control characters escaped (hostile names are in it)."""
    return re.sub(r"[^\n\x20-\x7e]", lambda m: ascii(m.group())[1:-1], text[-n:])


def header_of(frames: list[bytes]) -> Any:
    return json.loads(frames[2])


def decoded(frames: list[bytes]) -> p.Message | None:
    """The message in ``frames`` as the protocol reads it, or None if it is malformed."""
    try:
        return p.decode(frames)
    except Exception:  # anything but a clean decode is malformed, whatever it raises
        return None


def raw(type_name: str, text: str | bytes, *blobs: bytes) -> list[bytes]:
    body = text.encode() if isinstance(text, str) else text
    return [p.VERSION, type_name.encode(), body, *blobs]


def deep(n: int) -> str:
    return "[" * n + "]" * n


class Peer:
    """A raw DEALER on one of the master's ports."""

    def __init__(self, ctx: zmq.Context[Any], address: str, identity: bytes | None = None):
        self.identity = identity or f"raw-{uuid.uuid4().hex}".encode()
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.setsockopt(zmq.IDENTITY, self.identity)
        self.sock.connect(address)

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def drain(self) -> None:
        while self.sock.poll(0):
            self.sock.recv_multipart()

    def expect(self, type_name: str, timeout: float = REPLY_WAIT) -> list[bytes] | None:
        """The next message of ``type_name`` within ``timeout`` (others are skipped), or None."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                return None
            frames = self.sock.recv_multipart()
            if len(frames) >= 3 and frames[1] == type_name.encode():
                return frames
        return None

    def close(self) -> None:
        self.sock.close(0)


class FakeWorker(Peer):
    """A raw DEALER that registers at the worker port, then sends what the test says."""

    def __init__(self, ctx, cluster, slots: int = 1, host: str = "raw", pid: int = 4242):
        super().__init__(ctx, cluster.worker_address, f"w-raw-{uuid.uuid4().hex}".encode())
        self.ready = p.encode(p.Ready(slots, "tcp://127.0.0.1:9", host, pid))

    def register(self) -> None:
        self.drain()
        self.send(self.ready)
        assert self.expect("WELCOME") is not None, "the master did not welcome a valid READY"

    def listed(self, client: zmqmr.Client) -> bool:
        return any(w["id"] == self.identity.decode() for w in client.status()["workers"])

    def leave(self, client: zmqmr.Client) -> None:
        """BYE, and wait until the master has forgotten this worker (no job waits for it)."""
        self.send(p.encode(p.Bye()))
        wait_until(lambda: not self.listed(client), what="the fake worker's departure")


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


@pytest.fixture(scope="module")
def cluster():
    with zmqmr.LocalCluster(workers=2, **FAST) as c:
        yield c


@pytest.fixture
def fresh_cluster():
    """A cluster for one barrage at the master: a master it kills takes no other test along."""
    with zmqmr.LocalCluster(workers=2, **FAST) as c:
        yield c


def assert_alive(cluster, clients, after: str) -> None:
    """The master runs, every client's status() works, and it still lists the real workers."""
    if cluster.master_proc.poll() is not None:
        raise AssertionError(f"the master died after {after}:\n{tail(cluster.log('master'))}")
    for client in clients:
        try:
            status = client.status()
        except zmqmr.ZmqmrError as exc:
            time.sleep(0.2)
            dead = cluster.master_proc.poll() is not None
            raise AssertionError(
                f"status() failed after {after} ({exc}); the master is "
                f"{'dead' if dead else 'running'}:\n{tail(cluster.log('master'))}"
            ) from None
        pids = {w["pid"] for w in status["workers"]}
        assert set(cluster.worker_pids) <= pids, f"real workers lost after {after}: {status}"


def assert_exact_job(cluster) -> zmqmr.JobResult:
    """A word count on the cluster's real workers equals run_serial's, to the order."""
    job = zmqmr.Job(
        wc_mapper,
        wc_reducer,
        combiner=wc_reducer,
        inputs=SMALL_BOOKS,
        num_reducers=3,
        split_size=64 * 1024,
    )
    result = cluster.client().submit(job).wait(timeout=60)
    assert list(result.items()) == list(zmqmr.run_serial(job).items())
    return result


# -- 1. one message cannot kill the master: the worker port ------------------------------

_rng = random.Random(RANDOM_SEED)

#: (what, frames, malformed): a malformed one must get its registered sender dropped
#: and told RECONNECT; a valid one (fenced: no such attempt) must leave it registered.
WORKER_PORT_BARRAGE: list[tuple[str, list[bytes], bool]] = [
    ("a DONE for an attempt it was never given", p.encode(p.Done(987_654, p.Report())), False),
    (
        "a FAILED for an attempt it was never given",
        p.encode(p.Failed(987_655, "user", p.ErrorInfo("ValueError", "no"))),
        False,
    ),
    (
        "a FETCH_FAILED naming map task 10**9",
        p.encode(p.FetchFailed(1, 10**9, 1, "no such output")),
        False,
    ),
    (
        "a HEARTBEAT with progress of an attempt it was never given",
        p.encode(p.Heartbeat([p.AttemptProgress(987_656, 0.5)])),
        False,
    ),
    (
        "a DONE whose report.counters holds a string",
        raw("DONE", '{"attempt":1,"report":{"counters":{"records":"many"}}}'),
        True,
    ),
    (f"one random frame (seed {RANDOM_SEED})", [_rng.randbytes(64)], True),
    (f"five random frames (seed {RANDOM_SEED})", [_rng.randbytes(40) for _ in range(5)], True),
    ("one empty frame", [b""], True),
    ("the version frame alone", [p.VERSION], True),
    ("an old version", [b"ZMQMR1", b"HEARTBEAT", b"{}"], True),
    ("an unknown type", raw("TELEPORT", "{}"), True),
    ("a HEARTBEAT whose header is not JSON", raw("HEARTBEAT", b"\xff\xfe{not json"), True),
    ("a HEARTBEAT whose header is a list", raw("HEARTBEAT", "[]"), True),
    (
        "a DONE with NaN for a counter",
        raw("DONE", '{"attempt":1,"report":{"counters":{"x":NaN}}}'),
        True,
    ),
    (
        "a HEARTBEAT with Infinity for progress",
        raw("HEARTBEAT", '{"progress":[{"attempt":1,"fraction":Infinity}]}'),
        True,
    ),
    (
        "a FAILED holding a 100,000-deep nested list",
        raw("FAILED", '{"attempt":1,"kind":"user","error":' + deep(100_000) + "}"),
        True,
    ),
    ("a DONE for attempt 10**30", raw("DONE", f'{{"attempt":{10**30},"report":{{}}}}'), True),
    ("a DONE that ran -1 seconds", raw("DONE", '{"attempt":1,"report":{"seconds":-1}}'), True),
    ("a DONE that ran NaN seconds", raw("DONE", '{"attempt":1,"report":{"seconds":NaN}}'), True),
    ("a DONE that ran 'long'", raw("DONE", '{"attempt":1,"report":{"seconds":"long"}}'), True),
    (
        "a DONE with a counter of 2**63",
        raw("DONE", f'{{"attempt":1,"report":{{"counters":{{"x":{2**63}}}}}}}'),
        True,
    ),
    ("a READY with 5000-digit slots", raw("READY", '{"slots":' + "9" * 5000 + "}"), True),
    *(
        (
            f"a READY whose shuffle address is {address!r}",
            raw("READY", json.dumps({"slots": 1, "shuffle": address, "host": "h", "pid": 1})),
            True,
        )
        for address in ("not an address", "tcp://*:5555", "tcp://127.0.0.1:0", "inproc://x")
    ),
    (
        "a HEARTBEAT whose progress fraction is 10**400 (an int no float can hold)",
        raw("HEARTBEAT", f'{{"progress":[{{"attempt":1,"fraction":{10**400}}}]}}'),
        True,
    ),
    ("a client's STATUS at the worker port", p.encode(p.StatusRequest()), True),
    ("the master's own ASSIGN sent back to it", raw("ASSIGN", "{}"), True),
    (
        "a BATCH of a fenced DONE, a HEARTBEAT and a fenced FAILED",
        p.encode_batch(
            [
                p.Done(987_657, p.Report(), blobs=[b"r"]),
                p.Heartbeat([p.AttemptProgress(987_658, 0.5)]),
                p.Failed(987_659, "crash", p.ErrorInfo("ExecutorDied", "no")),
            ]
        ),
        False,
    ),
    (
        "a BATCH whose second part is a DONE with a string counter",
        raw(
            "BATCH",
            '[["HEARTBEAT",{},[]],["DONE",{"attempt":1,"report":{"counters":{"x":"many"}}},[]]]',
            b"",
        ),
        True,
    ),
    (
        "a BATCH whose blob lengths do not add up to its body",
        raw("BATCH", '[["DONE",{"attempt":1,"report":{}},[10]]]', b"abc"),
        True,
    ),
    (
        "a BATCH holding a BATCH",
        raw("BATCH", '[["BATCH",[["HEARTBEAT",{},[]]],[]],["HEARTBEAT",{},[]]]', b""),
        True,
    ),
    ("a BATCH of no parts", raw("BATCH", "[]", b""), True),
    ("a BATCH of 5000 parts", raw("BATCH", json.dumps([["HEARTBEAT", {}, []]] * 5000), b""), True),
    ("a BATCH with no body frame", raw("BATCH", '[["HEARTBEAT",{},[]]]'), True),
    ("a BATCH whose header is a 100,000-deep list", raw("BATCH", deep(100_000), b""), True),
    (
        "a BATCH holding a client's STATUS",
        raw("BATCH", '[["HEARTBEAT",{},[]],["STATUS",{},[]]]', b""),
        True,
    ),
]


@pytest.mark.timeout(90)
def test_no_message_from_a_registered_worker_kills_the_master(fresh_cluster, ctx):
    c = fresh_cluster
    everyone = [c.client(timeout=5), c.client(timeout=5)]
    liar = FakeWorker(ctx, c, host="hôte-\U0001f4a3")
    problems = []
    try:
        for what, frames, malformed in WORKER_PORT_BARRAGE:
            liar.register()
            liar.send(frames)
            told = liar.expect("RECONNECT", timeout=REPLY_WAIT if malformed else 0.05)
            assert_alive(c, everyone, what)
            if malformed and told is None:
                problems.append(f"{what}: the sender was not told to RECONNECT")
            if not malformed and (told is not None or not liar.listed(everyone[0])):
                problems.append(f"{what}: a valid message got its sender dropped")
        liar.leave(everyone[0])
    finally:
        liar.close()
    assert_exact_job(c)
    assert problems == []


# -- 1. one message cannot kill the master: the client port ------------------------------

RECORDS_SPEC = {
    "name": "hostile",
    "num_reducers": 1,
    "splits": [{"kind": "records", "blob": 0, "count": 1, "first": 0}],
}


def submit_frames(job: Any, **spec: Any) -> list[bytes]:
    body = json.dumps({"job": job, "spec": {**RECORDS_SPEC, **spec}})
    return raw("SUBMIT", body, b"code", b"records")


#: (what, frames, the answer due: (type, its job id or None), or None for silence)
CLIENT_PORT_BARRAGE: list[tuple[str, list[bytes], tuple[str, str | None] | None]] = [
    ("a SUBMIT with job id ../../x", submit_frames("../../x"), ("REJECTED", None)),
    (
        "a SUBMIT whose name is a list",
        submit_frames("hostile-1", name=["a"]),
        ("REJECTED", "hostile-1"),
    ),
    (
        "a SUBMIT whose records split names a blob it did not send",
        submit_frames("hostile-2")[:-1],
        ("REJECTED", "hostile-2"),
    ),
    ("a SUBMIT with no splits", submit_frames("hostile-3", splits=[]), ("REJECTED", "hostile-3")),
    (
        "a SUBMIT with 10**30 reducers",
        submit_frames("hostile-4", num_reducers=10**30),
        ("REJECTED", "hostile-4"),
    ),
    ("a POLL for an unknown job", p.encode(p.Poll("no-such-job")), ("JOB_FAILED", "no-such-job")),
    (
        "a long POLL for an unknown job",
        p.encode(p.Poll("no-such-job-2", wait=30.0)),
        ("JOB_FAILED", "no-such-job-2"),
    ),
    ("a CANCEL_JOB for an unknown job", p.encode(p.CancelJob("no-such-job")), None),
    (f"one random frame (seed {RANDOM_SEED})", [_rng.randbytes(100)], None),
    (f"seven random frames (seed {RANDOM_SEED})", [_rng.randbytes(30) for _ in range(7)], None),
    ("one empty frame", [b""], None),
    ("a type and no header", [p.VERSION, b"SUBMIT"], None),
    ("a SUBMIT whose header is not JSON", raw("SUBMIT", b"{\xff", b"code"), None),
    ("a SUBMIT whose header is 100,000 deep", raw("SUBMIT", deep(100_000), b"code"), None),
    ("a STATUS with an unknown field", raw("STATUS", '{"verbose":true}'), None),
    (
        "a worker's READY at the client port",
        p.encode(p.Ready(1, "tcp://127.0.0.1:9", "h", 1)),
        None,
    ),
]


@pytest.mark.timeout(90)
def test_no_message_at_the_client_port_kills_the_master_and_bad_submits_are_rejected(
    fresh_cluster, ctx
):
    c = fresh_cluster
    everyone = [c.client(timeout=5), c.client(timeout=5)]
    rogue = Peer(ctx, c.address)
    problems = []
    try:
        for what, frames, due in CLIENT_PORT_BARRAGE:
            rogue.drain()
            rogue.send(frames)
            got = None if due is None else rogue.expect(due[0])
            assert_alive(c, everyone, what)
            if due is None:
                continue
            if got is None:
                problems.append(f"{what}: no {due[0]} (silence)")
            elif due[1] is not None and header_of(got).get("job") != due[1]:
                problems.append(f"{what}: {due[0]} names job {header_of(got).get('job')!r}")
    finally:
        rogue.close()
    assert_exact_job(c)
    assert problems == []


# -- 1. a hypothesis-driven barrage --------------------------------------------------------
#
# Messages are derived from zmqmr.protocol.MESSAGES and the kinds of their fields, so a
# message type added to the protocol is fuzzed without a line here; then one field (or
# one frame) is corrupted: a wrong type, a huge number, deep nesting, NaN, a job id.

_DEEP = "\x00deep\x00"
_NAN = "\x00nan\x00"
_DIGITS = "\x00digits\x00"
_INF = "\x00inf\x00"

SPLITS = st.sampled_from(
    [
        {"kind": "text", "path": "/nonexistent/in.txt", "start": 0, "end": 10},
        {"kind": "files", "paths": ["/nonexistent/a.txt"]},
        {"kind": "records", "blob": 0, "count": 1, "first": 0},
    ]
)


def valid_json(kind: records.Kind) -> st.SearchStrategy[Any]:
    """JSON values that ``kind`` accepts."""
    if isinstance(kind, records.Int):
        return st.integers(kind.lo, kind.hi)
    if isinstance(kind, records.Num):
        return st.floats(kind.lo, kind.hi, allow_nan=False, allow_infinity=False)
    if isinstance(kind, records.Str):
        if kind.choices is not None:
            return st.sampled_from(sorted(kind.choices))
        if kind.pattern is not None:  # job ids: valid, and unknown to the master
            return st.from_regex(kind.pattern, fullmatch=True)
        return st.text(max_size=min(kind.max_len, 12))
    if isinstance(kind, records.Bool):
        return st.booleans()
    if isinstance(kind, records.Opt):
        return st.none() | valid_json(kind.kind)
    if isinstance(kind, records.ListOf):
        return st.lists(valid_json(kind.item), max_size=min(kind.max_len, 2))
    if isinstance(kind, records.Ints):
        return st.lists(st.integers(kind.lo, min(kind.hi, kind.lo + 10**6)), max_size=2)
    if isinstance(kind, records.DictOf):
        return st.dictionaries(st.text(max_size=8), valid_json(kind.value), max_size=2)
    if isinstance(kind, records.Obj):
        return record_json(kind.cls)
    raise AssertionError(f"a field kind this test does not know: {kind!r}")


def record_json(cls: type[records.Record]) -> st.SearchStrategy[dict[str, Any]]:
    if cls is p.Split:  # which fields a split needs depends on its kind
        return SPLITS
    fields = {name: valid_json(kind) for name, kind in cls.FIELDS.items()}
    if cls is p.JobSpec:
        fields["splits"] = st.lists(SPLITS, min_size=1, max_size=2)
    if cls is p.Fetch:  # columns of one length: a request the server reads through
        n = st.shared(st.integers(1, 3), key="fetch parts")
        for column in ("maps", "attempts", "offsets"):
            fields[column] = n.flatmap(
                lambda k: st.lists(st.integers(0, 5), min_size=k, max_size=k)
            )
    return st.fixed_dictionaries(fields)


#: What a number becomes: past any float, past int64, or not a number at all (hypothesis
#: draws a first branch most: the numbers that no float conversion survives lead).
BAD_NUMBERS = st.one_of(
    st.sampled_from([10**400, -(10**400), 2**1024, 10**4000]),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**30)]),
    st.sampled_from([_NAN, _INF, _DIGITS, 1e308, -1e308, 5e-324, -0.0]),
)
#: What a string becomes: job ids unknown to the master, or ones no job may have.
BAD_STRINGS = st.one_of(
    st.from_regex(p.JOB_ID, fullmatch=True),
    st.sampled_from(["../../x", "a" * 65, "job/1", "\ud800", "x" * (records.MAX_NAME + 1)]),
)
BAD_VALUES = st.one_of(
    st.sampled_from(["wrong", "", 1, -1, 2.5, True, False, None, [], {}, [1, "x"], {"x": 1}]),
    BAD_NUMBERS,
    st.sampled_from([_DEEP, _NAN]),
    BAD_STRINGS,
)


def bad_value_for(kind: records.Kind) -> st.SearchStrategy[Any]:
    """Anything wrong; for a number field mostly a wrong number, for a string a wrong string."""
    if isinstance(kind, records.Opt):
        kind = kind.kind
    if isinstance(kind, (records.Int, records.Num)):
        return st.one_of(BAD_NUMBERS, BAD_VALUES)
    if isinstance(kind, records.Str):
        return st.one_of(BAD_STRINGS, BAD_VALUES)
    return BAD_VALUES


SCALARS = (records.Int, records.Num, records.Str, records.Bool)


def _fields(
    value: Any, kind: records.Kind, at: tuple[Any, ...] = ()
) -> Iterator[tuple[Any, records.Kind]]:
    """(path, kind) of every field in a header, nested ones too, the header itself first."""
    yield at, kind
    if isinstance(kind, records.Opt):
        kind = kind.kind
    if isinstance(kind, records.Obj) and isinstance(value, dict):
        for name, v in value.items():
            yield from _fields(v, kind.cls.FIELDS[name], (*at, name))
    elif isinstance(kind, records.ListOf) and isinstance(value, list):
        for i, v in enumerate(value):
            yield from _fields(v, kind.item, (*at, i))
    elif isinstance(kind, records.DictOf) and isinstance(value, dict):
        for k, v in value.items():
            yield from _fields(v, kind.value, (*at, k))


def _replaced(value: Any, at: tuple[Any, ...], new: Any) -> Any:
    if not at:
        return new
    out = dict(value) if isinstance(value, dict) else list(value)
    out[at[0]] = _replaced(value[at[0]], at[1:], new)
    return out


def _dump(header: Any, depth: int) -> bytes:
    text = json.dumps(header)
    text = text.replace(json.dumps(_DEEP), deep(depth)).replace(json.dumps(_NAN), "NaN")
    text = text.replace(json.dumps(_INF), "-Infinity")
    return text.replace(json.dumps(_DIGITS), "9" * 5000).encode()


FRAME_CORRUPTIONS = [
    ("an old version", lambda f: [b"ZMQMR1", *f[1:]]),
    ("no version frame", lambda f: f[1:]),
    ("an unknown type", lambda f: [f[0], b"TELEPORT", *f[2:]]),
    ("a lower-case type", lambda f: [f[0], f[1].lower(), *f[2:]]),
    ("no header", lambda f: f[:2]),
    ("a header that is not JSON", lambda f: [*f[:2], b"\xff{", *f[3:]]),
    ("a header that is JSON null", lambda f: [*f[:2], b"null", *f[3:]]),
    ("three more blobs", lambda f: [*f, b"x", b"y", b"z"]),
    ("its blobs dropped", lambda f: f[:3]),
]


@st.composite
def hostile_message(draw, name: str, depths=(1_500, 100_000)) -> tuple[str, list[bytes]]:
    """(what it is, its frames): a ``name`` message with one thing wrong, or nothing."""
    cls = p.MESSAGES[name]
    header = draw(record_json(cls))
    blobs = [b"blob"] * (2 if cls is p.Submit else cls.BLOBS[0])
    how = draw(st.sampled_from(["leaf"] * 6 + ["any", "add", "drop", "frames", "bytes", "none"]))
    what = name
    if how in ("leaf", "any"):
        fields = list(_fields(header, records.Obj(cls)))
        leaves = [f for f in fields if isinstance(getattr(f[1], "kind", f[1]), SCALARS)]
        at, kind = draw(st.sampled_from(leaves if how == "leaf" and leaves else fields))
        bad = draw(bad_value_for(kind))
        header = _replaced(header, at, bad)
        what = f"{name} with {'.'.join(map(str, at)) or 'its header'} = {bad!r:.60}"
    elif how == "add":
        header = {**header, "unexpected": draw(BAD_VALUES)}
        what = f"{name} with an unknown field"
    elif how == "drop" and header:
        gone = draw(st.sampled_from(sorted(header)))
        header = {k: v for k, v in header.items() if k != gone}
        what = f"{name} without {gone}"
    frames = [p.VERSION, name.encode(), _dump(header, draw(st.sampled_from(depths))), *blobs]
    if how == "frames":
        label, corrupt = draw(st.sampled_from(FRAME_CORRUPTIONS))
        frames, what = corrupt(frames), f"{name} with {label}"
    elif how == "bytes":
        frames = draw(st.lists(st.binary(max_size=80), min_size=1, max_size=5))
        what = f"random frames {frames!r:.80}"
    return what[:200], frames


#: Hypothesis skews towards some choices; a round holds every message type once, so
#: each is corrupted as often as the others.
MESSAGE_TYPES = sorted(p.MESSAGES)


def rounds(extra: tuple[str, ...] = (), depths=(1_500, 100_000), targets=("",)):
    """A round: ((target, (what, frames)), ...), every message type (and ``extra``) once."""
    return st.tuples(
        *(
            st.tuples(st.sampled_from(targets), hostile_message(name, depths))
            for name in (*MESSAGE_TYPES, *extra)
        )
    )


#: The master process's recursion limit: Python's default, which it leaves alone.
MASTER_RECURSION_LIMIT = 1000


def names_a_valid_job(frames: list[bytes]) -> str | None:
    """The job id of a SUBMIT whose header is a JSON object naming a valid one."""
    if len(frames) < 3 or frames[0] != p.VERSION or frames[1] != b"SUBMIT":
        return None
    # Read as the master reads it, at Python's default recursion limit (hypothesis
    # raises this process's): a header nested too deep for it names no job.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(MASTER_RECURSION_LIMIT)
    try:
        obj = json.loads(frames[2], parse_constant=lambda c: 1 / 0)
    except (ValueError, ZeroDivisionError, RecursionError):
        return None
    finally:
        sys.setrecursionlimit(limit)
    job = obj.get("job") if isinstance(obj, dict) else None
    return job if isinstance(job, str) and p.JOB_ID.fullmatch(job) else None


class FirstFailure:
    """The first failure of a barrage, given as the failure of every later example too.

    Once a peer is dead every message fails; hypothesis would then report the simplest
    failing example, not the one that killed it. Every failure is raised from one line,
    so hypothesis sees one bug, and its message names the message that caused it.
    """

    def __init__(self) -> None:
        self.message: str | None = None

    def run(self, check, *args) -> None:
        if self.message is None:
            try:
                check(*args)
            except AssertionError as exc:
                self.message = str(exc)
        if self.message is not None:
            raise AssertionError(self.message)


BARRAGE = settings(
    max_examples=300 // len(MESSAGE_TYPES),  # rounds: about 300 messages
    deadline=None,
    database=None,  # nothing written into the repository
    derandomize=True,  # the same barrage every run: a failure replays
    phases=[Phase.generate],  # no shrinking: once the master is dead every example fails
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)


@pytest.mark.timeout(120)
def test_fuzzed_messages_at_both_master_ports_never_kill_it(fresh_cluster, ctx):
    c = fresh_cluster
    everyone = [c.client(timeout=5)]
    liar = FakeWorker(ctx, c)
    rogue = Peer(ctx, c.address)
    registered = [False]

    def at_the_client_port(what: str, frames: list[bytes]) -> None:
        msg = decoded(frames)
        if isinstance(msg, p.Submit):
            return  # a valid job is no attack
        rogue.drain()
        rogue.send(frames)
        job = names_a_valid_job(frames)
        if isinstance(msg, p.Poll):
            due = ("JOB_FAILED", msg.job)  # no job is known
        elif isinstance(msg, p.StatusRequest):
            due = ("STATUS_REPLY", None)
        elif msg is None and job is not None:
            due = ("REJECTED", job)
        else:
            due = None
        got = None if due is None else rogue.expect(due[0])
        assert_alive(c, everyone, f"{what} at the client port")
        if due is not None:
            assert got is not None, f"no {due[0]} for {what}"
            assert due[1] is None or header_of(got)["job"] == due[1]

    def at_the_worker_port(what: str, frames: list[bytes]) -> None:
        if not registered[0]:
            liar.register()
            registered[0] = True
        liar.drain()
        liar.send(frames)
        msg = decoded(frames)
        kind = msg.TYPE if msg is not None else None
        if kind not in WORKER_TYPES:
            due = "RECONNECT"  # malformed, or not a worker's message: dropped
            registered[0] = False
        elif kind == "READY":
            due = "WELCOME"
        else:
            due = None
            registered[0] = kind != "BYE"
        got = None if due is None else liar.expect(due)
        assert_alive(c, everyone, f"{what} at the worker port")
        assert due is None or got is not None, f"no {due} for {what}"

    first = FirstFailure()

    @BARRAGE
    @given(rounds(targets=("worker", "client")))
    def barrage(messages) -> None:
        for target, (what, frames) in messages:
            send = at_the_worker_port if target == "worker" else at_the_client_port
            first.run(send, what, frames)

    try:
        barrage()
        if registered[0]:
            liar.leave(everyone[0])
    finally:
        liar.close()
        rogue.close()
    assert_exact_job(c)


@pytest.mark.timeout(120)
def test_fuzzed_requests_at_a_shuffle_server_are_each_answered_and_it_keeps_serving(
    fresh_cluster, ctx
):
    c = fresh_cluster
    workers = c.client().status()["workers"]
    address = next(w["shuffle"] for w in workers if w["pid"] == c.worker_pids[0])
    req = ctx.socket(zmq.REQ)
    req.linger = 0
    req.setsockopt(zmq.REQ_RELAXED, 1)  # a lost answer fails one example, not every later one
    req.setsockopt(zmq.REQ_CORRELATE, 1)
    req.connect(address)

    def ask(frames: list[bytes], what: str) -> p.Message:
        req.send_multipart(frames)
        assert req.poll(int(REPLY_WAIT * 1000)), f"the shuffle server did not answer {what}"
        reply = decoded(req.recv_multipart())
        assert reply is not None, f"the shuffle server's answer to {what} is malformed"
        return reply

    def answered(what: str, frames: list[bytes]) -> None:
        reply = ask(frames, what)
        if isinstance(decoded(frames), p.Fetch):  # of outputs that do not exist
            assert isinstance(reply, (p.FetchError, p.Chunks)), f"{reply.TYPE} for {what}"
        else:
            assert isinstance(reply, p.FetchError), f"{reply.TYPE} for {what}"
            assert not reply.corrupt, f"a malformed request called corrupt: {what}"

    first = FirstFailure()

    @settings(BARRAGE, max_examples=200 // (len(MESSAGE_TYPES) + 5))
    @given(rounds(extra=("FETCH",) * 5, depths=(1_500, 20_000)))
    def barrage(messages) -> None:
        for _, (what, frames) in messages:
            if sum(map(len, frames)) < shuffle.MAX_REQUEST_BYTES - 1024:  # else the socket
                first.run(answered, what, frames)  # refuses it, by design, unread

    try:
        barrage()
        still = ask(p.encode(p.Fetch("no-such-job", 0, [0], [1], [0], 1 << 20)), "FETCH")
        assert isinstance(still, p.FetchError) and not still.corrupt and still.map_task == 0
    finally:
        req.close(0)
    result = assert_exact_job(c)
    assert result.stats["fetch_failures"] == 0  # both shuffle servers served every reducer


def _served(ctx: zmq.Context[Any], tmp_path: Any) -> tuple[shuffle.ShuffleServer, list[Any]]:
    """A shuffle server over three real map outputs of job ``j1`` (4 partitions)."""
    from conftest import write_output

    from zmqmr import layout

    data_dir = str(tmp_path / "data")
    os.makedirs(layout.job_dir(data_dir, "j1"))
    written = [write_output(layout.map_output_path(data_dir, "j1", m, 1), 4) for m in range(3)]
    server = shuffle.ShuffleServer(ctx, data_dir, "tcp://127.0.0.1:*")
    server.start()
    return server, written


def _fetch_json(**fields: Any) -> list[bytes]:
    header = {"job": "j1", "partition": 2, "maps": [0, 1, 2], "attempts": [1, 1, 1]}
    header.update({"offsets": [0, 0, 0], "max_bytes": 1 << 20}, **fields)
    return raw("FETCH", json.dumps(header))


#: Requests by column that no reducer sends: each gets a FetchError, never a crash.
HOSTILE_FETCHES = {
    "columns of different lengths": _fetch_json(attempts=[1, 1]),
    "a map task asked for twice": _fetch_json(maps=[0, 0, 1]),
    "no parts": _fetch_json(maps=[], attempts=[], offsets=[]),
    "a negative offset": _fetch_json(offsets=[0, -1, 0]),
    "an offset past int64": _fetch_json(offsets=[0, 2**63, 0]),
    "a float in a column": _fetch_json(attempts=[1, 1.0, 1]),
    "a bool in a column": _fetch_json(maps=[0, True, 2]),
    "a string for a column": _fetch_json(maps="012"),
    "a nested list in a column": _fetch_json(maps=[[0], 1, 2]),
    "a map task past the most a job has": _fetch_json(maps=[0, 1, p.MAX_MAP_TASKS]),
    "more parts than a request may ask": _fetch_json(
        maps=list(range(p.MAX_FETCH_PARTS + 1)),
        attempts=[1] * (p.MAX_FETCH_PARTS + 1),
        offsets=[0] * (p.MAX_FETCH_PARTS + 1),
    ),
    "a partition past the outputs'": _fetch_json(partition=9),
    "an offset past the segment": _fetch_json(offsets=[0, 10**9, 0]),
    "an attempt that never ran": _fetch_json(attempts=[1, 7, 1]),
    "a job that does not exist": _fetch_json(job="no-such-job"),
    "a job id that climbs out": _fetch_json(job="../j1"),
    "a CHUNKS where a FETCH goes": raw(
        "CHUNKS", '{"maps":[0],"offsets":[0],"totals":[5],"lengths":[5]}', b"abcde"
    ),
    "a blob on a FETCH": [*_fetch_json(), b"extra"],
}


@pytest.mark.timeout(60)
def test_malformed_fetch_requests_by_column_are_each_refused_and_real_fetches_stay_exact(
    ctx, tmp_path
):
    server, written = _served(ctx, tmp_path)
    req = ctx.socket(zmq.REQ)
    req.linger = 0
    req.connect(server.address)
    try:
        for what, frames in HOSTILE_FETCHES.items():
            req.send_multipart(frames)
            assert req.poll(int(REPLY_WAIT * 1000)), f"no answer to {what}"
            reply = p.decode(req.recv_multipart())
            assert isinstance(reply, p.FetchError), f"{reply.TYPE} for {what}"
            assert not reply.corrupt, f"{what} called corrupt"
        # a request that is valid but tiny gets parts whose bytes are the file's own
        req.send_multipart(_fetch_json(max_bytes=3))
        assert req.poll(int(REPLY_WAIT * 1000))
        reply = p.decode(req.recv_multipart())
        assert isinstance(reply, p.Chunks) and reply.maps == [0] and reply.lengths == [3]
        assert reply.offsets == [0] and reply.totals[0] > 3
        # and the server still serves whole segments, checked, to a real fetch
        wanted = [shuffle.Wanted(m, 1) for m in range(3)]
        got, failed = shuffle.fetch_segments(
            ctx, server.address, "j1", 2, wanted, chunk=1 << 20, timeout=3.0, retries=2
        )
        assert failed == {}
        assert {m: list(f.groups()) for m, f in got.items()} == {
            m: [tuple(g) for g in w[2]] for m, w in enumerate(written)
        }
    finally:
        req.close(0)
        server.stop()


# -- 1. a bad name must not break status -------------------------------------------------


def zmqmr_status(cluster, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "zmqmr", "status", "--insecure", "--master", cluster.address]
    return subprocess.run([*command, *args], env=ENV, capture_output=True, timeout=30)


@pytest.mark.timeout(60)
def test_status_works_for_every_client_and_the_cli_with_a_hostile_worker_name(cluster, ctx):
    client = cluster.client(timeout=5)
    liar = FakeWorker(ctx, cluster, host=HOSTILE_HOST)
    try:
        liar.send(liar.ready)
        joined = liar.expect("WELCOME") is not None  # refusing such a name would do too
        workers = len(cluster.worker_pids) + joined
        for c in (client, cluster.client(timeout=5)):
            hosts = [w["host"] for w in c.status()["workers"]]
            assert len(hosts) == workers and (HOSTILE_HOST in hosts) == joined
        as_json = zmqmr_status(cluster, "--json")
        assert as_json.returncode == 0, tail(as_json.stderr.decode(errors="replace"))
        assert len(json.loads(as_json.stdout)["workers"]) == workers
        as_text = zmqmr_status(cluster)
        assert as_text.returncode == 0, tail(as_text.stderr.decode(errors="replace"))
        assert f"{workers} worker(s)".encode() in as_text.stdout
    finally:
        liar.leave(client)
        liar.close()


@pytest.mark.timeout(60)
def test_a_worker_cannot_forge_lines_in_the_master_log_with_its_host_name(cluster, ctx):
    forged = "2026-01-01 00:00:00,000 zmqmr.master INFO job x succeeded: FORGED"
    liar = FakeWorker(ctx, cluster, host=f"liar\n{forged}", pid=5150)
    try:
        liar.send(liar.ready)
        liar.expect("WELCOME")  # or a refusal of the name: either is fine
    finally:
        liar.leave(cluster.client(timeout=5))  # once it is gone, its READY has been logged
        liar.close()
    lines = cluster.log("master").splitlines()
    assert not [line for line in lines if line.startswith(forged)], "a forged log line"


# -- 2. a worker that sends anything malformed is dropped ----------------------------------


@pytest.mark.timeout(60)
def test_a_worker_that_sends_a_malformed_done_is_dropped_and_the_log_says_why(cluster, ctx):
    client = cluster.client(timeout=5)
    liar = FakeWorker(ctx, cluster, host="liar", pid=31337)
    try:
        liar.register()
        assert liar.listed(client)
        liar.send(raw("DONE", '{"attempt":1,"report":{"counters":{"records":"many"}}}'))
        assert liar.expect("RECONNECT") is not None, "not told to RECONNECT at once"
        assert not liar.listed(client)
        liar.send(p.encode(p.Heartbeat()))
        assert liar.sock.poll(int(REPLY_WAIT * 1000)), "its next HEARTBEAT got no answer"
        answer = liar.sock.recv_multipart()
        assert answer[1] == b"RECONNECT"  # not a HEARTBEAT: the master no longer counts it
    finally:
        liar.close()
    ident = re.escape(repr(liar.identity[:64]))
    problem = r"DONE\.report\.counters\['records'\] must be an int\b.*'many'"  # field, want, got
    dropped = rf"WARNING dropping a malformed message from worker {ident}: {problem}$"
    gone = (
        r"INFO worker liar:31337 is gone: 0 running attempts and 0 map outputs lost: "
        rf"it sent a malformed message: {problem} \[malformed-\d+\]$"
    )
    wait_until(
        lambda: all(re.search(r, cluster.log("master"), re.M) for r in (dropped, gone)),
        what=f"the master's log of why:\n{tail(cluster.log('master'))}",
    )
    assert cluster.master_proc.poll() is None


# -- 3. no peer can stall a job --------------------------------------------------------------


class GreedyWorker(threading.Thread):
    """Registers claiming 10,000 slots, heartbeats every interval, never answers an ASSIGN.
    With ``lists``, its heartbeats list every attempt it was given, at no progress."""

    def __init__(self, ctx, cluster, interval: float, lists: bool = False):
        super().__init__(name="greedy-worker", daemon=True)
        self.lists = lists
        self.peer = FakeWorker(ctx, cluster, slots=10_000, host="greedy", pid=4242)
        self.interval = interval
        self.stopping = threading.Event()
        self.assigned = 0
        self.outstanding: set[int] = set()
        self.most_outstanding = 0

    def run(self) -> None:
        sock = self.peer.sock
        sock.send_multipart(self.peer.ready)
        beat = p.encode(p.Heartbeat())
        next_beat = time.monotonic()
        while not self.stopping.is_set():
            if sock.poll(20):
                for msg in p.decode_batch(sock.recv_multipart()).parts:  # one message or several
                    if isinstance(msg, p.Assign):
                        self.assigned += 1
                        self.outstanding.add(msg.attempt)
                        self.most_outstanding = max(self.most_outstanding, len(self.outstanding))
                    elif isinstance(msg, p.Cancel):
                        self.outstanding.discard(msg.attempt)
            if time.monotonic() >= next_beat:
                if self.lists:
                    held = [p.AttemptProgress(a, 0.0) for a in sorted(self.outstanding)]
                    beat = p.encode(p.Heartbeat(held))
                sock.send_multipart(beat)
                next_beat += self.interval

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)
        self.peer.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("lists", [False, True], ids=["lists-nothing", "lists-all"])
def test_a_greedy_worker_that_never_answers_cannot_stall_a_job(ctx, lists):
    # worker_timeout is long: the greedy worker is alive and lying, never declared dead.
    # Listing nothing while it holds attempts, it shows it does not hold them: they run
    # again elsewhere. Listing them all at no progress, they look stalled: backups.
    tuning = dict(insecure=True, heartbeat_interval=0.2, worker_timeout=30.0, max_worker_slots=8)
    job = zmqmr.Job(wc_mapper, wc_reducer, inputs=SMALL_BOOKS, num_reducers=2, split_size=8192)
    with zmqmr.LocalCluster(workers=2, **tuning) as c:
        greedy = GreedyWorker(ctx, c, interval=0.2, lists=lists)
        greedy.start()
        try:
            c.wait_for_workers(3)
            client = c.client(timeout=5)
            slots = {w["host"]: w["slots"] for w in client.status()["workers"]}
            assert slots["greedy"] == 8
            handle = client.submit(job)
            started = time.monotonic()
            result = handle.wait(timeout=20)  # well within worker_timeout
            took = time.monotonic() - started
            assert greedy.peer.listed(client), "the greedy worker was declared dead"
        finally:
            greedy.stop()
        log = c.log("master")
    assert list(result.items()) == list(zmqmr.run_serial(job).items())
    assert took < 20
    assert greedy.assigned >= 1, "the greedy worker was never tried"
    # attempts it may hold: its slots' worth running, and queued per slot at most the
    # deeper queue small tasks get (these maps are small)
    s = c.cluster_settings
    assert greedy.most_outstanding <= 8 * (1 + max(s.prefetch, s.small_task_prefetch))
    j = re.escape(handle.job_id)
    if lists:  # what it runs looks stalled: backups
        assert result.stats["backups_launched"] >= 1
        why = rf"job {j}: backup of (map|reduce) task \d+ on \S+: .+"
    else:  # what was queued there it shows it does not hold: it runs again
        assert result.stats["lost_attempts"] >= 1
        why = rf"job {j}: (map|reduce) task \d+ runs again: greedy:4242 does not hold it .+"
    for line in (
        r"worker greedy:4242 joined with 8 slots \(it claimed 10000; max_worker_slots\): READY",
        why,
        rf"job {j}: worker greedy:4242 gets no more of its tasks: .+ (stalled|was not held) there",
    ):
        assert re.search(line + r" \[[a-z_]+-\d+\]$", log, re.M), f"{line!r} not in\n{tail(log)}"


def _slow_words(key, value):
    time.sleep(0.002)
    for w in value.split():
        yield w, 1


def _huge_submit(job_id: str, splits: int) -> list[bytes]:
    """A legal SUBMIT whose header takes the master seconds to decode (splits of many
    paths), with a body that is no job: accepted, never run (it is cancelled)."""
    one = '{"kind":"files","paths":[' + ",".join(['"a"'] * 60) + "]}"
    spec = (
        '{"name":"huge","num_reducers":1,"splits":[' + ",".join([one] * splits) + '],'
        '"max_attempts":1,"output_dir":null,"speculative":true,"skip_bad_records":false,'
        '"task_timeout":null,"has_combiner":false}'
    )
    header = ('{"job":"' + job_id + '","spec":' + spec + "}").encode()
    return [p.VERSION, b"SUBMIT", header, b"not a pickle"]


def test_submits_that_take_seconds_to_decode_cost_no_worker_its_place():
    # Several at once take longer to decode than worker_timeout: the master reads one
    # a turn, its heartbeats going out between them, so no worker (which would take
    # the master's silence for its death) reconnects and no map output is run again.
    with zmqmr.LocalCluster(workers=2, insecure=True, heartbeat_interval=0.2,
                            worker_timeout=4.0) as c:  # fmt: skip
        job = zmqmr.Job(_slow_words, wc_reducer, inputs=[(i, f"w{i % 13} v{i % 5}") for i in
                        range(6000)], split_size=5000, num_reducers=2)  # fmt: skip
        handle = c.client(timeout=60).submit(job)
        ctx = zmq.Context()
        peers, ids = [], []
        try:
            for _ in range(4):
                ids.append(uuid.uuid4().hex[:16])
                peer = ctx.socket(zmq.DEALER)
                peer.linger = 0
                peer.connect(c.address)
                peer.send_multipart(_huge_submit(ids[-1], 100_000))
                peers.append(peer)
            for peer in peers:
                assert peer.poll(120_000), "a SUBMIT was never answered"
                assert p.decode(peer.recv_multipart()).TYPE == "ACCEPTED"
            for peer, job_id in zip(peers, ids):
                peer.send_multipart(p.encode(p.CancelJob(job_id)))
            result = handle.wait(timeout=120, progress=False)
        finally:
            for peer in peers:
                peer.close(0)
            ctx.term()
        assert list(result.items()) == list(zmqmr.run_serial(job).items())
        assert result.stats["reexecuted_maps"] == result.stats["lost_attempts"] == 0
        assert " is gone: " not in c.log("master"), c.log("master")[-2000:]
