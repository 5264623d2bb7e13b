"""What a reduce is told and what it reads: only non-empty segments, counted.

The master's assignment of a reduce names only the map outputs with data for
its partition; the reduce side reads only the segments it was given that
hold bytes, this worker's own in one batch of the output reader, and makes no
work directory unless it spills. No sockets: every map output here is local.
"""

from __future__ import annotations

import os
import pickle
from collections import Counter
from multiprocessing import Pipe
from typing import Any

import pytest

from zmqmr import events as ev
from zmqmr import layout, mapoutput, outputreader, protocol, reduceside, shuffle
from zmqmr.config import ClusterSettings, WorkerSettings
from zmqmr.errors import CorruptOutput
from zmqmr.state import MasterState

JOB = "job1"
HERE = "tcp://127.0.0.1:7001"


# -- the master: an assignment carries the non-empty segments of its partition --------


def _sparse(task: int, reducers: int) -> list[protocol.Segment]:
    """Map task ``task`` has data for three partitions, of sizes that name it."""
    parts = sorted({task % reducers, (task * 7 + 1) % reducers, (task * 3 + 2) % reducers})
    return [protocol.Segment(p, 10 + task, 1 + p) for p in parts]


@pytest.mark.parametrize("maps,reducers", [(20, 10), (40, 100)])
def test_reduce_assignments_carry_exactly_the_non_empty_segments(maps, reducers):
    s = MasterState(ClusterSettings())
    pending: list[ev.Assign] = []

    def handle(event: ev.Event) -> None:
        pending.extend(c for c in s.handle(event, 0.0) if isinstance(c, ev.Assign))

    handle(ev.WorkerReady(b"w0", 2, HERE, "host", 1))
    splits = [protocol.Split("records", blob=i, count=1, first=i) for i in range(maps)]
    spec = protocol.JobSpec("sparse", reducers, splits)
    handle(ev.JobSubmitted(b"client", "sparse", spec, b"code", [b""] * maps))
    located: dict[int, list[protocol.Location]] = {}
    map_attempts: dict[int, int] = {}
    while pending:
        a = pending.pop(0)
        if a.kind == "map":
            map_attempts[a.task] = a.attempt
            handle(
                ev.AttemptDone(
                    a.worker, a.attempt, protocol.Report(segments=_sparse(a.task, reducers))
                )
            )
        else:
            located[a.task] = a.spec.locations
            handle(ev.AttemptDone(a.worker, a.attempt, protocol.Report(), b""))
    assert sorted(located) == list(range(reducers))
    want: dict[int, list[protocol.Location]] = {r: [] for r in range(reducers)}
    for m in range(maps):
        for seg in _sparse(m, reducers):
            want[seg.partition].append(
                protocol.Location(m, map_attempts[m], HERE, seg.size, seg.groups)
            )
    assert located == want
    # the work is the segments', not maps x reducers
    assert sum(map(len, located.values())) == sum(len(_sparse(m, reducers)) for m in range(maps))


# -- the reduce side: empty segments are never read, local ones in one batch ------------


class CountingReader(outputreader.OutputReader):
    """An output reader that counts what it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()
        self.batches = 0

    def read(self, path: str, partition: int, offset: int = 0, max_bytes: int = -1) -> Any:
        self.reads[os.path.basename(path)] += 1
        return super().read(path, partition, offset, max_bytes)

    def read_many(self, partition: int, wanted: Any, max_bytes: int = -1) -> Any:
        self.batches += 1
        wanted = list(wanted)
        self.reads.update(os.path.basename(path) for path, _ in wanted)
        return super().read_many(partition, wanted, max_bytes)

    def locate(self, path: str, partition: int) -> mapoutput.Segment:
        self.reads[os.path.basename(path)] += 1
        return super().locate(path, partition)


@pytest.fixture
def made(monkeypatch) -> list[str]:
    """The directories ``os.makedirs`` is asked for while the test runs."""
    asked: list[str] = []
    real = os.makedirs

    def makedirs(path: str, *args: Any, **kw: Any) -> None:
        asked.append(path)
        real(path, *args, **kw)

    monkeypatch.setattr(os, "makedirs", makedirs)
    return asked


def _count(key: Any, values: Any) -> int:
    return sum(values)


def _groups(m: int, p: int) -> list[tuple[Any, list[Any]]]:
    """Map task ``m``'s groups for partition ``p`` of 4: empty for every odd m at p = 1."""
    if p == 1 and m % 2:
        return []
    return [(f"k{p}-{i}", [m + i]) for i in range(1 + (m + p) % 3)]


def _setup(tmp_path, maps: int = 8, **settings: int) -> tuple[reduceside.ReduceSide, str, Any]:
    data_dir = str(tmp_path / "data")
    os.makedirs(layout.job_dir(data_dir, JOB))
    for m in range(maps):
        w = mapoutput.MapOutputWriter(layout.map_output_path(data_dir, JOB, m, 100 + m), 4)
        for p in range(4):
            w.write_segment(_groups(m, p))
        w.close()
    conn, other = Pipe()
    reader = CountingReader()
    side = reduceside.ReduceSide(
        conn, data_dir, HERE, WorkerSettings(**settings), None, reader, lambda f: None
    )
    return side, data_dir, (conn, other)


def _spec(data_dir: str, partition: int, maps: int, relocated_empty: int | None = None):
    locations = []
    for m in range(maps):
        seg = outputreader.read_index(layout.map_output_path(data_dir, JOB, m, 100 + m))[partition]
        if seg.length or m == relocated_empty:  # the master names only non-empty ones...
            locations.append(protocol.Location(m, 100 + m, HERE, seg.length, seg.groups))
    return protocol.TaskSpec(
        "t", 4, maps, None, False, 1 << 30, partition=partition, locations=locations
    )


def _expected(partition: int, maps: int) -> list[tuple[Any, int]]:
    sums: Counter[Any] = Counter()
    for m in range(maps):
        for k, vs in _groups(m, partition):
            sums[k] += sum(vs)
    return sorted(sums.items())


def _result(blob: bytes | None) -> list[tuple[Any, int]]:
    assert blob is not None
    return [tuple(kv) for kv in mapoutput.segment_groups(blob)]  # type: ignore[misc]


def test_a_reduce_reads_each_non_empty_local_segment_once_in_one_batch(tmp_path):
    maps = 8
    side, data_dir, conns = _setup(tmp_path, maps)
    try:
        # ...and a re-executed map with nothing for the partition is relocated with size 0
        spec = _spec(data_dir, 1, maps, relocated_empty=3)
        assert [loc.size for loc in spec.locations if loc.map_task == 3] == [0]
        report, blob = side.run_reduce({"reducer": _count}, JOB, 1, 9, spec, {})
        assert _result(blob) == _expected(1, maps)
        reader = side.reader
        assert isinstance(reader, CountingReader)
        non_empty = [m for m in range(maps) if _groups(m, 1)]
        assert reader.reads == Counter(layout.map_output_name(m, 100 + m) for m in non_empty)
        assert reader.batches == 1
    finally:
        side.reader.forget()
        for c in conns:
            c.close()


def test_a_reduce_that_spills_nothing_makes_no_work_directory(tmp_path, made):
    side, data_dir, conns = _setup(tmp_path)
    made.clear()  # the data dir's
    try:
        for p in range(4):
            _, blob = side.run_reduce(
                {"reducer": _count}, JOB, p, 20 + p, _spec(data_dir, p, 8), {}
            )
            assert _result(blob) == _expected(p, 8)
        assert made == []
    finally:
        side.reader.forget()
        for c in conns:
            c.close()


def test_a_reduce_past_reduce_memory_reads_in_place_and_merges_through_its_work_dir(tmp_path, made):
    maps = 40
    # every segment past reduce_memory, and more of them than a merge takes at once
    side, data_dir, conns = _setup(tmp_path, maps, reduce_memory=1, merge_fanin=4)
    made.clear()  # the data dir's
    try:
        counters: dict[str, int] = {}
        _, blob = side.run_reduce(
            {"reducer": _count}, JOB, 2, 7, _spec(data_dir, 2, maps), counters
        )
        assert _result(blob) == _expected(2, maps)
        work = layout.reduce_work_dir(data_dir, JOB, 2, 7)
        assert made == [work] and not os.path.exists(work)  # made once, removed after
        assert counters["zmqmr.spilled_bytes"] > 0
    finally:
        side.reader.forget()
        for c in conns:
            c.close()


def test_a_location_pickles_to_an_equal_one_by_position():
    loc = protocol.Location(12, 345, HERE, 678, 9)
    back = pickle.loads(pickle.dumps(loc, pickle.HIGHEST_PROTOCOL))
    assert back == loc and type(back) is protocol.Location
    spec = protocol.TaskSpec("t", 4, 13, None, False, 1, partition=2, locations=[loc] * 3)
    assert pickle.loads(pickle.dumps(spec, pickle.HIGHEST_PROTOCOL)) == spec


def test_a_removed_output_is_not_read_from_the_descriptor_held_open(tmp_path):
    side, data_dir, conns = _setup(tmp_path, 2)
    try:
        got, failed = side._fetch_from(JOB, 0, HERE, [shuffle.Wanted(0, 100)])
        assert list(got) == [0] and not failed
        os.remove(layout.map_output_path(data_dir, JOB, 0, 100))
        got, failed = side._fetch_from(
            JOB, 0, HERE, [shuffle.Wanted(0, 100), shuffle.Wanted(1, 101)]
        )
        assert list(got) == [1] and "missing" in str(failed[0])
    finally:
        side.reader.forget()
        for c in conns:
            c.close()


# -- decoding many small segments at once ------------------------------------------------


def _segment(groups: list[tuple[Any, list[Any]]], flat: bool) -> bytes:
    if flat:
        pairs = [(k, v) for k, vs in groups for v in vs]
        return b"".join(b"".join(block) for block in mapoutput.encode_pairs(pairs))
    return b"".join(b"".join(block) for block in mapoutput.encode_groups(groups))


@pytest.mark.parametrize(
    "sizes",
    [
        [1] * 50,  # a key per segment, as at large R
        [0, 3, 0, 7],
        [5000],  # several parts in a block
        [40_000],  # parts of several pickle frames, blocks of several parts
    ],
)
@pytest.mark.parametrize("flat", [True, False])
def test_decode_segments_gives_what_segment_groups_gives_in_order(sizes, flat):
    segments = [
        _segment([(f"k{i:06d}", [s, "v" * (i % 7)]) for i in range(n)], flat)
        for s, n in enumerate(sizes)
    ]
    want = [tuple(g) for seg in segments for g in mapoutput.segment_groups(seg)]
    got = mapoutput.decode_segments(segments)
    assert [(k, list(vs)) for k, vs in got] == [(k, list(vs)) for k, vs in want]
    assert sum(len(vs) for _, vs in got) == 2 * sum(sizes)  # every value, once


@pytest.mark.parametrize("cut", [1, 5, 9, 12])
def test_decode_and_verify_refuse_a_cut_or_flipped_segment(cut):
    seg = _segment([(i, [i]) for i in range(10)], True)
    with pytest.raises(CorruptOutput):
        mapoutput.decode_segments([seg[:-cut]])
    flipped = bytearray(seg)
    flipped[-cut] ^= 0x40
    with pytest.raises(CorruptOutput):
        mapoutput.verify_segment(bytes(flipped))


def test_a_shuffle_server_answers_many_segments_with_one_batch_read_and_one_blob(tmp_path):
    side, data_dir, conns = _setup(tmp_path, 8)
    server = shuffle.ShuffleServer(None, data_dir, "tcp://127.0.0.1:*")  # type: ignore[arg-type]
    counting = server.reader = CountingReader()
    try:
        maps = [m for m in range(8) if _groups(m, 1)]
        request = protocol.Fetch(JOB, 1, maps, [100 + m for m in maps], [0] * len(maps), 1 << 20)
        frames = server.handle(protocol.encode(request))
        assert len(frames) == 4  # version, type, header, and one blob for every segment
        reply = protocol.decode(frames)
        assert isinstance(reply, protocol.Chunks) and reply.maps == maps
        assert counting.batches == 1
        assert counting.reads == Counter(layout.map_output_name(m, 100 + m) for m in maps)
        blob, pos = reply.blobs[0], 0
        for m, n, total in zip(maps, reply.lengths, reply.totals):
            path = layout.map_output_path(data_dir, JOB, m, 100 + m)
            assert (n, blob[pos : pos + n]) == outputreader.read_segment(path, 1) and n == total
            pos += n
    finally:
        counting.forget()
        side.reader.forget()
        for c in conns:
            c.close()


def test_a_reduce_grouped_in_a_dict_holds_one_decoded_segment_at_a_time(tmp_path, monkeypatch):
    """Segments are decoded one by one into the dict (at most the one before is still
    held): every segment's decoded groups at once, beside the dict, took a word
    count's executors from 41 to 69 MB. (In Python: the C loop decodes a part at a
    time, see the next test.)"""
    import weakref

    monkeypatch.setattr(mapoutput, "speedups", None)

    class Groups(list):  # a list that a weak reference can watch
        pass

    real = mapoutput.decode_segments
    calls: list[int] = []
    earlier: list[weakref.ref[Groups]] = []

    def decode_segments(datas):
        datas = list(datas)
        calls.append(len(datas))
        # the segment just merged may still be bound to the merge's loop variable
        alive = sum(ref() is not None for ref in earlier)
        assert alive <= 1, f"{alive} earlier segments' groups are alive"
        out = Groups(real(datas))
        earlier.append(weakref.ref(out))
        return out

    monkeypatch.setattr(mapoutput, "decode_segments", decode_segments)
    maps = 8
    side, data_dir, conns = _setup(tmp_path, maps)
    try:
        _, blob = side.run_reduce({"reducer": _count}, JOB, 0, 9, _spec(data_dir, 0, maps), {})
        assert _result(blob) == _expected(0, maps)
        assert calls == [1] * maps
    finally:
        side.reader.forget()
        for c in conns:
            c.close()


needs_ext = pytest.mark.skipif(mapoutput.speedups is None, reason="zmqmr._speedups not built")


@needs_ext
def test_the_c_merge_holds_one_decoded_part_at_a_time(tmp_path, monkeypatch):
    import weakref

    class Part(list):  # a decoded part that a weak reference can watch
        pass

    real = pickle.loads
    earlier: list[weakref.ref[Part]] = []

    def loads(data):
        assert all(ref() is None for ref in earlier), "an earlier part is still alive"
        got = real(data)
        if type(got) is tuple:  # flat: given on as its groups (the Python merge's path)
            got = list(zip(got[0], zip(got[1])))
        part = Part(got)
        earlier.append(weakref.ref(part))
        return part

    monkeypatch.setattr(pickle, "loads", loads)
    maps = 8
    side, data_dir, conns = _setup(tmp_path, maps)
    try:
        _, blob = side.run_reduce({"reducer": _count}, JOB, 0, 9, _spec(data_dir, 0, maps), {})
        monkeypatch.undo()
        assert _result(blob) == _expected(0, maps)
        assert len(earlier) == maps  # a part (of one block) per segment here
    finally:
        side.reader.forget()
        for c in conns:
            c.close()


def _cyclic() -> list[Any]:
    x: list[Any] = [1]
    x.append(x)
    return x


def _mixed_segments() -> list[bytes]:
    """Segments of every shape a map output holds: flat parts and lists of groups,
    a key spanning segments, parts past 4 KiB, blocks of several parts and several
    frames, values pickled with a memo (cyclic) and by cloudpickle (a lambda)."""
    return [
        _segment([(1, ["a"]), (2, ["b"])], True),
        _segment([(1, ["c", "d"]), (3, [None])], False),
        _segment([(f"k{i:05d}", ["v" * (i % 13)]) for i in range(3000)], True),
        _segment([(f"k{i:05d}", [i, -i]) for i in range(40_000)], False),
        _segment([(2, [_cyclic()])], False),
        _segment([(1, [lambda: 7])], False),
        _segment([], True),
        _segment([(b"x", [1.5]), (b"y", [(1, 2)])], True),
    ]


def _merged(datas: list[bytes]) -> dict[Any, list[Any]]:
    groups: dict[Any, list[Any]] = {}
    mapoutput.merge_segments(datas, groups)
    return groups


def _comparable(groups: dict[Any, list[Any]]) -> list[Any]:
    out = []
    for k, vs in sorted(groups.items(), key=lambda kv: repr(kv[0])):
        out.append((k, [v() if callable(v) else repr(v) for v in vs]))
    return out


@needs_ext
def test_the_c_merge_gives_what_the_python_merge_gives_in_order(monkeypatch):
    datas = _mixed_segments()
    got = _merged(datas)
    monkeypatch.setattr(mapoutput, "speedups", None)
    want = _merged(datas)
    assert _comparable(got) == _comparable(want)
    assert got[1][:3] == ["a", "c", "d"]  # segment order within a key
    assert len(got["k00007"]) == 3  # one value from the flat segment, two from the groups


@pytest.mark.parametrize("c", [True, False])
def test_bad_segments_names_each_cut_flipped_or_unknown_segment_and_only_those(c, monkeypatch):
    if c and mapoutput.speedups is None:
        pytest.skip("zmqmr._speedups not built")
    if not c:
        monkeypatch.setattr(mapoutput, "speedups", None)
    good = _mixed_segments()
    flipped = bytearray(good[3])
    flipped[len(flipped) // 2] ^= 0x01
    codec = bytearray(good[0])
    codec[0] = 2
    crc = bytearray(good[1])
    crc[6] ^= 0x80  # the checksum itself
    datas = [
        good[0],
        good[2][:-1],  # cut
        good[3],
        bytes(flipped),
        good[1][:5],  # a header cut short
        bytes(codec),
        good[6],
        bytes(crc),
        good[7],
    ]
    assert mapoutput.bad_segments(datas) == [1, 3, 4, 5, 7]
    assert mapoutput.bad_segments(good) == []
    with pytest.raises(CorruptOutput):
        _merged([good[0], good[2][:-1]])
    with pytest.raises(CorruptOutput):
        _merged([bytes(codec)])


@needs_ext
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 63, 1000, 70_000])
def test_the_c_checksum_is_zlibs(n):
    """A block whose header carries zlib's crc32 passes the C check; one bit off fails."""
    import random
    import zlib

    payload = random.Random(n).randbytes(n)
    head = bytes((mapoutput.CODEC_PICKLE,)) + n.to_bytes(4, "little")
    crc = zlib.crc32(payload, zlib.crc32(head))
    block = head + crc.to_bytes(4, "little") + payload
    off = head + (crc ^ 1 << (n % 32)).to_bytes(4, "little") + payload
    assert mapoutput.speedups.verify_segments([block, block]) == -1
    assert mapoutput.speedups.verify_segments([block, off]) == 1


@pytest.mark.parametrize("hash_bytes", [1 << 24, 10])
def test_segments_held_as_their_bytes_group_alike_in_a_dict_and_through_a_merge(
    tmp_path, monkeypatch, hash_bytes
):
    """In-memory verified segments come as bytes; past HASH_GROUP_BYTES they are merged
    as streams instead, with the same groups in the same order."""
    monkeypatch.setattr(reduceside, "HASH_GROUP_BYTES", hash_bytes)
    side, _, conns = _setup(tmp_path, 2)
    segments: list[Any] = [
        _segment([(f"k{j}", [s, i]) for j in range(5) for i in range(4)], s % 2 == 0)
        for s in range(4)
    ]
    segments.insert(2, b"")  # a re-executed map with nothing here
    want: dict[Any, list[Any]] = {}
    for data in segments:
        for k, vs in mapoutput.segment_groups(data):
            want.setdefault(k, []).extend(vs)
    try:
        work = reduceside.WorkDir(str(tmp_path / "work"))
        got: dict[Any, list[Any]] = {}
        for batch in side._grouped(list(segments), work, {}):
            for k, vs in batch:
                got.setdefault(k, []).extend(vs)
        work.remove()
        assert list(got.items()) == sorted(want.items())
    finally:
        side.reader.forget()
        for c in conns:
            c.close()
