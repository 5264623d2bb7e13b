"""Hostile peers on real sockets: no message, and no liar, can kill or stall the cluster.

Raw DEALER and REQ sockets speak, or abuse, the wire format at the master's
two ports and at a worker's shuffle server. After every barrage the master
process is alive, ``Client.status()`` answers every client, and a real job on
the cluster's real workers gives exactly ``run_serial``'s answer.

Barrages at the master get a cluster of their own (one starts in about half a
second): if a message kills the master, only the test that sent it fails, and
the others still say what they prove.
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
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

import zmqmr
from zmqmr import protocol as p
from zmqmr import shuffle

FAST = dict(heartbeat_interval=0.2, worker_timeout=3.0)
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
#: The two smallest books: a job over them takes well under a second.
SMALL_BOOKS = [b for b in BOOKS if "being_ernest" in b or "metamorphosis" in b]
#: What a registered worker may send without being dropped.
WORKER_TYPES = frozenset({"READY", "HEARTBEAT", "DONE", "FAILED", "FETCH_FAILED", "BYE"})
#: A host name that no terminal, encoder or column width is ready for, yet a valid NAME.
HOSTILE_HOST = ("\ud800 evil\x1b[2J\r\n\x00\u202e" + "\U0001f4a3" * 300)[: p.MAX_NAME]
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
    return text[-n:]


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

    def __init__(self, ctx, cluster, slots: int = 1, host: str = HOSTILE_HOST, pid: int = 4242):
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
    ("a DONE with NaN for a counter", raw("DONE", '{"attempt":1,"report":{"counters":{"x":NaN}}}'), True),
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
    (
        "a DONE with a counter of 2**63",
        raw("DONE", f'{{"attempt":1,"report":{{"counters":{{"x":{2**63}}}}}}}'),
        True,
    ),
    ("a READY with 5000-digit slots", raw("READY", '{"slots":' + "9" * 5000 + "}"), True),
    (
        "a HEARTBEAT whose progress fraction is 10**400 (an int no float can hold)",
        raw("HEARTBEAT", f'{{"progress":[{{"attempt":1,"fraction":{10**400}}}]}}'),
        True,
    ),
    ("a client's STATUS at the worker port", p.encode(p.StatusRequest()), True),
    ("the master's own ASSIGN sent back to it", raw("ASSIGN", "{}"), True),
]


@pytest.mark.timeout(90)
def test_no_message_from_a_registered_worker_kills_the_master(fresh_cluster, ctx):
    c = fresh_cluster
    everyone = [c.client(timeout=5), c.client(timeout=5)]
    liar = FakeWorker(ctx, c)  # its host name is hostile too: status must survive it
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

