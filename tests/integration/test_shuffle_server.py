"""The shuffle server and the fetch, over real REP/REQ sockets on 127.0.0.1.

Every socket and context is closed and every server stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from conftest import write_output

from zmqmr import protocol
from zmqmr.errors import CorruptOutput, ProtocolError, ShuffleError
from zmqmr.layout import job_dir, map_output_path
from zmqmr.mapoutput import CODEC_PICKLE, FOOTER
from zmqmr.outputreader import read_index
from zmqmr.shuffle import ShuffleServer, SocketPool, Wanted, fetch_segments, start_fetch

JOB = "job1"


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


@pytest.fixture
def data_dir(tmp_path) -> str:
    d = tmp_path / "data"
    d.mkdir()
    return str(d)


@pytest.fixture
def server(ctx, data_dir) -> Iterator[ShuffleServer]:
    srv = ShuffleServer(ctx, data_dir, "tcp://127.0.0.1:*")
    address = srv.start()
    assert address.startswith("tcp://127.0.0.1:")
    try:
        yield srv
    finally:
        srv.stop()


def served_output(data_dir: str, task: int = 0, attempt: int = 1, r: int = 3) -> list[list[Any]]:
    os.makedirs(job_dir(data_dir, JOB), exist_ok=True)
    groups = lambda r, p: [(f"k{p}-{i:03d}", [i, "v" * (i % 5)]) for i in range(40 * (p + 1))]  # noqa: E731
    return write_output(map_output_path(data_dir, JOB, task, attempt), r, groups)


def fetch(ctx, server, partition=0, job=JOB, task=0, attempt=1, spill_path=None, **kw) -> Any:
    """One segment through ``fetch_segments``; its error raised as it reports it."""
    options = {"chunk": 1 << 20, "timeout": 2.0, "retries": 3, **kw}
    address = server if isinstance(server, str) else server.address
    wanted = [Wanted(task, attempt, spill_path)]
    got, failed = fetch_segments(ctx, address, job, partition, wanted, **options)
    if failed:
        raise failed[task]
    return got[task]


def test_fetch_returns_the_segment_as_written(ctx, server, data_dir):
    written = served_output(data_dir)
    for p in range(3):
        got = fetch(ctx, server, partition=p)
        assert list(got.groups()) == written[p]
        assert got.length == read_index(map_output_path(data_dir, JOB, 0, 1))[p].length


def test_fetch_in_chunks_smaller_than_the_segment(ctx, server, data_dir):
    written = served_output(data_dir)
    length = read_index(map_output_path(data_dir, JOB, 0, 1))[2].length
    before = server.requests
    got = fetch(ctx, server, partition=2, chunk=7)
    assert list(got.groups()) == written[2]
    assert server.requests - before == -(-length // 7)


def test_fetch_to_a_spill_file(ctx, server, data_dir, tmp_path):
    written = served_output(data_dir)
    spill = str(tmp_path / "spill.seg")
    got = fetch(ctx, server, partition=1, chunk=7, spill_path=spill)
    assert got.data is None and got.path == spill
    assert os.path.getsize(spill) == got.length
    assert list(got.groups()) == written[1]


def test_fetch_of_an_empty_partition(ctx, server, data_dir):
    os.makedirs(job_dir(data_dir, JOB))
    write_output(map_output_path(data_dir, JOB, 0, 1), 2, lambda r, p: [] if p else [("a", [1])])
    got = fetch(ctx, server, partition=1, chunk=7)
    assert got.length == 0 and list(got.groups()) == []


def test_fetch_of_a_missing_file_is_shuffle_error_not_corrupt(ctx, server, data_dir):
    served_output(data_dir, attempt=1)
    for kw in ({"attempt": 2}, {"task": 5}, {"job": "other"}):
        with pytest.raises(ShuffleError) as info:
            fetch(ctx, server, **kw)
        assert not isinstance(info.value, CorruptOutput)


def test_fetch_of_a_partition_that_does_not_exist_is_shuffle_error(ctx, server, data_dir):
    served_output(data_dir, r=3)
    with pytest.raises(ShuffleError):
        fetch(ctx, server, partition=3)


def test_fetch_of_a_corrupt_segment_is_corrupt_output(ctx, server, data_dir):
    served_output(data_dir)
    path = map_output_path(data_dir, JOB, 0, 1)
    seg = read_index(path)[1]
    with open(path, "r+b") as f:
        f.seek(seg.offset + seg.length - 3)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CorruptOutput):
        fetch(ctx, server, partition=1, chunk=7)
    assert list(fetch(ctx, server, partition=0).groups())  # other segments still serve


def test_fetch_of_a_segment_with_a_flipped_codec_bit_is_corrupt_output(ctx, server, data_dir):
    # the codec byte is outside the payload: a flip there must still be caught
    # before anything is decoded
    served_output(data_dir)
    path = map_output_path(data_dir, JOB, 0, 1)
    seg = read_index(path)[1]
    with open(path, "r+b") as f:
        f.seek(seg.offset)
        assert f.read(1) == bytes([CODEC_PICKLE])
        f.seek(seg.offset)
        f.write(bytes([CODEC_PICKLE ^ 1]))
    with pytest.raises(CorruptOutput):
        list(fetch(ctx, server, partition=1).groups())


def test_fetch_of_a_file_with_a_corrupt_index_is_corrupt_output(ctx, server, data_dir):
    served_output(data_dir)
    path = map_output_path(data_dir, JOB, 0, 1)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size - FOOTER.size - 1)
        f.write(b"\x99")
    with pytest.raises(CorruptOutput):
        fetch(ctx, server)


def test_job_id_with_path_characters_is_refused_by_the_server(ctx, server, data_dir, tmp_path):
    # a valid map output one level up, where "../x" would lead
    outside = tmp_path / "x"
    outside.mkdir()
    write_output(str(outside / "m00000-a1.out"), 1)
    with pytest.raises(ShuffleError) as info:
        fetch(ctx, server, job="../x")
    assert not isinstance(info.value, CorruptOutput)
    request = protocol.Fetch("../x", 0, [0], [1], [0], 1 << 20)
    with pytest.raises(ProtocolError, match="job"):
        server.handle(protocol.encode(request))


def test_server_answers_a_malformed_request_and_keeps_serving(ctx, server, data_dir):
    written = served_output(data_dir)
    req = ctx.socket(zmq.REQ)
    req.linger = 0
    try:
        req.connect(server.address)
        req.send_multipart([b"garbage"])
        assert req.poll(5000)
        reply = protocol.decode(req.recv_multipart())
        assert isinstance(reply, protocol.FetchError) and reply.corrupt is False
    finally:
        req.close(0)
    assert list(fetch(ctx, server).groups()) == written[0]


def test_silent_server_is_shuffle_error_after_retries(ctx):
    sink = ctx.socket(zmq.ROUTER)  # reads requests, never answers
    sink.linger = 0
    try:
        port = sink.bind_to_random_port("tcp://127.0.0.1")
        start = time.monotonic()
        with pytest.raises(ShuffleError, match="3 tries") as info:
            fetch(ctx, f"tcp://127.0.0.1:{port}", timeout=0.2, retries=3)
        elapsed = time.monotonic() - start
        assert not isinstance(info.value, CorruptOutput)
        assert 0.5 <= elapsed < 5.0
        received = 0
        while sink.poll(200):
            sink.recv_multipart()
            received += 1
        # one request per try, each on a fresh socket (a loaded machine may lose
        # the last one to linger=0, so only the bounds are checked)
        assert 1 <= received <= 3
    finally:
        sink.close(0)


def test_closed_port_is_shuffle_error_after_retries(ctx):
    probe = ctx.socket(zmq.REP)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)
    start = time.monotonic()
    with pytest.raises(ShuffleError):
        fetch(ctx, f"tcp://127.0.0.1:{port}", timeout=0.2, retries=2)
    assert time.monotonic() - start < 5.0


def test_server_stops_promptly(ctx, data_dir):
    srv = ShuffleServer(ctx, data_dir, "tcp://127.0.0.1:*")
    srv.start()
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 2.0
    assert not srv._thread.is_alive()


def test_server_that_cannot_bind_reports_it_at_start(ctx, data_dir):
    srv = ShuffleServer(ctx, data_dir, "bogus://nowhere")
    with pytest.raises(zmq.ZMQError):
        srv.start()


def test_several_segments_come_in_one_request_over_one_connection(ctx, server, data_dir):
    written = {t: served_output(data_dir, task=t) for t in range(5)}
    before = server.requests
    wanted = [Wanted(t, 1) for t in range(5)]
    got, failed = fetch_segments(
        ctx, server.address, JOB, 2, wanted, chunk=1 << 20, timeout=2.0, retries=3
    )
    assert failed == {}
    assert {t: list(f.groups()) for t, f in got.items()} == {t: w[2] for t, w in written.items()}
    assert server.requests - before == 1


def test_one_missing_output_fails_alone_and_the_others_still_arrive(ctx, server, data_dir):
    written = {t: served_output(data_dir, task=t) for t in (0, 2)}
    wanted = [Wanted(0, 1), Wanted(1, 1), Wanted(2, 1, spill_path=os.path.join(data_dir, "s"))]
    got, failed = fetch_segments(
        ctx, server.address, JOB, 0, wanted, chunk=64, timeout=2.0, retries=3
    )
    assert set(failed) == {1} and not isinstance(failed[1], CorruptOutput)
    assert {t: list(f.groups()) for t, f in got.items()} == {t: w[0] for t, w in written.items()}
    assert got[2].path is not None


def test_requests_stay_within_max_bytes_across_parts(ctx, server, data_dir):
    for t in range(3):
        served_output(data_dir, task=t)
    sizes = [read_index(map_output_path(data_dir, JOB, t, 1))[2].length for t in range(3)]
    before = server.requests
    got, failed = fetch_segments(
        ctx,
        server.address,
        JOB,
        2,
        [Wanted(t, 1) for t in range(3)],
        chunk=100,
        timeout=2.0,
        retries=3,
    )
    assert not failed and {t: f.length for t, f in got.items()} == dict(enumerate(sizes))
    assert server.requests - before >= -(-sum(sizes) // 100)


def test_a_pooled_connection_serves_the_next_fetch_and_a_dead_one_is_replaced(ctx, data_dir):
    written = served_output(data_dir)
    pool = SocketPool()
    srv = ShuffleServer(ctx, data_dir, "tcp://127.0.0.1:*")
    address = srv.start()
    try:
        opts = {"chunk": 1 << 20, "timeout": 1.0, "retries": 2, "pool": pool}
        got, _ = fetch_segments(ctx, address, JOB, 0, [Wanted(0, 1)], **opts)
        kept = pool.take(address)
        assert kept is not None  # answered: given back to the pool
        pool.give(address, kept)
        got, _ = fetch_segments(ctx, address, JOB, 2, [Wanted(0, 1)], **opts)
        assert list(got[0].groups()) == written[2]
        assert pool.take(address) is kept  # the same connection served the second fetch
        pool.give(address, kept)
    finally:
        srv.stop()
    # the server is gone: the pooled socket times out, is closed, and the fetch fails cleanly
    got, failed = fetch_segments(ctx, address, JOB, 0, [Wanted(0, 1)], **opts)
    assert got == {} and "no answer" in str(failed[0])
    assert pool.take(address) is None
    pool.close()


def test_started_fetches_are_all_asked_before_any_answer_is_read(ctx, tmp_path):
    """A reducer sends its request to every server first and reads the answers after,
    all in one thread: each server has answered by the time its answer is asked for."""
    servers, written = [], []
    for i in range(2):
        d = str(tmp_path / f"data{i}")
        os.makedirs(d)
        written.append(served_output(d, task=i, attempt=1))
        servers.append(ShuffleServer(ctx, d, "tcp://127.0.0.1:*"))
    pool = SocketPool()
    try:
        addresses = [srv.start() for srv in servers]
        opts = {"chunk": 1 << 20, "timeout": 2.0, "retries": 2, "pool": pool}
        flights = [
            start_fetch(ctx, a, JOB, 1, [Wanted(i, 1)], **opts) for i, a in enumerate(addresses)
        ]
        deadline = time.monotonic() + 10
        while sum(srv.requests for srv in servers) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert [srv.requests for srv in servers] == [1, 1]  # both asked, none read yet
        for i, flight in enumerate(flights):
            got, failed = flight.result()
            assert not failed and list(got[i].groups()) == written[i][1]
            assert flight.result() == (got, failed)  # asked again: the same, nothing sent
        assert [srv.requests for srv in servers] == [1, 1]
        for a in addresses:
            kept = pool.take(a)
            assert kept is not None  # answered: given back
            pool.give(a, kept)
        # one given up on before its answer is read: its socket is closed, not pooled
        kept = pool.take(addresses[0])
        assert kept is not None
        kept.close(0)
        flight = start_fetch(ctx, addresses[0], JOB, 0, [Wanted(0, 1)], **opts)
        flight.close()
        assert pool.take(addresses[0]) is None
    finally:
        for srv in servers:
            srv.stop()
        pool.close()


def test_a_small_reduce_reads_its_own_and_another_workers_segments_with_no_thread(
    ctx, server, data_dir, tmp_path
):
    from multiprocessing import Pipe

    from zmqmr import mapoutput, outputreader, reduceside
    from zmqmr.config import WorkerSettings

    here = str(tmp_path / "here")
    there = served_output(data_dir, task=0, attempt=1)  # on the server
    mine = served_output(here, task=1, attempt=1)  # this worker's own
    locations = [
        protocol.Location(m, 1, address, seg.length, seg.groups)
        for m, d, address in ((0, data_dir, server.address), (1, here, "tcp://127.0.0.1:1"))
        for seg in [read_index(map_output_path(d, JOB, m, 1))[2]]
    ]
    spec = protocol.TaskSpec("t", 3, 2, None, False, 1 << 30, partition=2, locations=locations)
    conn, other = Pipe()
    side = reduceside.ReduceSide(
        conn, here, "tcp://127.0.0.1:1", WorkerSettings(), None, outputreader.OutputReader(), print
    )
    try:
        _, blob = side.run_reduce({"reducer": lambda k, vs: list(vs)}, JOB, 2, 9, spec, {})
        want: dict[Any, list[Any]] = {}
        for k, vs in there[2] + mine[2]:
            want.setdefault(k, []).extend(vs)
        assert dict(mapoutput.segment_groups(blob or b"")) == want
        assert side._pool is None  # no thread was started for the other worker's segments
    finally:
        side.reader.forget()
        side.sockets.close()
        if side._zctx is not None:
            side._zctx.term()
        conn.close()
        other.close()
