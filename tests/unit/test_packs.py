"""Packs: small map outputs appended to one file per executor (zmqmr.packs), read
back through the same readers as outputs in files of their own; no sockets."""

from __future__ import annotations

import os
import shutil

import pytest

from zmqmr import layout, packs
from zmqmr.errors import CorruptOutput, ShuffleError
from zmqmr.mapoutput import MapOutputWriter
from zmqmr.outputreader import DirWatch, OutputReader
from zmqmr.shuffle import local_segment

JOB = "job1"


def groups_of(task: int, partition: int) -> list[tuple[int, list[int]]]:
    return [(partition * 1000 + task, [task, partition])]


def write(data_dir: str, pack: packs.PackWriter, task: int, attempt: int, pack_bytes: int = 4096):
    """One map output of 3 partitions, packed if it is at most ``pack_bytes``."""
    path = layout.map_output_path(data_dir, JOB, task, attempt)
    w = MapOutputWriter(path, 3, pack, pack_bytes, task, attempt)
    for r in range(3):
        w.write_segment(groups_of(task, r))
    w.close()
    return w


def read(data_dir: str, task: int, attempt: int, reader: OutputReader | None = None):
    path = layout.map_output_path(data_dir, JOB, task, attempt)
    return [list(local_segment(path, r, reader).groups()) for r in range(3)]


@pytest.fixture
def data_dir(tmp_path):
    os.makedirs(layout.job_dir(str(tmp_path), JOB))
    return str(tmp_path)


def new_pack(data_dir: str) -> packs.PackWriter:
    return packs.PackWriter(lambda: layout.pack_path(data_dir, JOB))


def three_entries(data_dir: str) -> tuple[packs.PackWriter, packs.Entry]:
    """A pack of the outputs of tasks 0, 1, 2 (attempts 1, 2, 3), and task 1's entry."""
    pack = new_pack(data_dir)
    entries = [write(data_dir, pack, t, t + 1).entry for t in range(3)]
    assert entries[1] is not None
    return pack, entries[1]


def test_small_outputs_go_into_one_pack_and_read_back_as_files_do(data_dir):
    pack = new_pack(data_dir)
    for t in range(5):
        w = write(data_dir, pack, t, 10 + t)
        assert w.entry is not None and w.bytes_written == w.entry.length
    names = os.listdir(layout.job_dir(data_dir, JOB))
    assert len(names) == 1 and layout.is_pack_name(names[0])
    reader = OutputReader()
    for t in range(5):
        expected = [groups_of(t, r) for r in range(3)]
        assert read(data_dir, t, 10 + t) == expected  # a reader of its own
        assert read(data_dir, t, 10 + t, reader) == expected  # one that keeps files open
        file, seg = reader.locate(layout.map_output_path(data_dir, JOB, t, 10 + t), 1)
        in_place = local_segment(layout.map_output_path(data_dir, JOB, t, 10 + t), 1, reader, True)
        assert file == pack.path and in_place.path == pack.path and in_place.offset == seg.offset
        assert list(in_place.groups()) == groups_of(t, 1)
    assert layout.held_outputs(data_dir) == [(JOB, t, 10 + t) for t in range(5)]
    with pytest.raises(ShuffleError, match="missing"):
        read(data_dir, 0, 99, reader)  # an attempt that wrote nothing
    reader.forget()


def test_an_output_past_pack_bytes_gets_a_file_of_its_own(data_dir):
    pack = new_pack(data_dir)
    w = write(data_dir, pack, 0, 1, pack_bytes=50)  # its first segment is more already
    assert w.entry is None
    assert os.path.exists(layout.map_output_path(data_dir, JOB, 0, 1))
    assert not os.path.exists(layout.map_output_path(data_dir, JOB, 0, 1) + ".tmp")
    assert read(data_dir, 0, 1) == [groups_of(0, r) for r in range(3)]
    w = write(data_dir, pack, 1, 2, pack_bytes=0)  # packing off
    assert w.entry is None and os.path.exists(layout.map_output_path(data_dir, JOB, 1, 2))
    assert not packs.packs_in(layout.job_dir(data_dir, JOB))  # nothing was appended


def test_an_output_read_after_it_was_appended_is_found_by_a_reader_that_read_the_pack_before(
    data_dir,
):
    pack = new_pack(data_dir)
    write(data_dir, pack, 0, 1)
    reader = OutputReader()
    assert read(data_dir, 0, 1, reader) == [groups_of(0, r) for r in range(3)]
    write(data_dir, pack, 1, 2)  # the pack grew since the reader read it
    other = new_pack(data_dir)  # and a second executor's pack appeared
    write(data_dir, other, 2, 3)
    assert read(data_dir, 1, 2, reader) == [groups_of(1, r) for r in range(3)]
    assert read(data_dir, 2, 3, reader) == [groups_of(2, r) for r in range(3)]
    reader.forget()


def test_a_flipped_byte_in_a_packed_output_fails_its_checksum(data_dir):
    pack, victim = three_entries(data_dir)
    with open(pack.path, "r+b") as f:  # a byte of its first block's payload
        f.seek(victim.offset + 12)
        b = f.read(1)
        f.seek(victim.offset + 12)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(CorruptOutput):
        read(data_dir, 1, 2)
    assert read(data_dir, 0, 1) == [groups_of(0, r) for r in range(3)]  # the others stand
    assert read(data_dir, 2, 3) == [groups_of(2, r) for r in range(3)]


def test_a_cut_pack_loses_the_outputs_from_the_cut_on(data_dir):
    pack = new_pack(data_dir)
    entries = [write(data_dir, pack, t, t + 1).entry for t in range(4)]
    reader = OutputReader()
    assert read(data_dir, 3, 4, reader)  # held open with its index, before the cut
    cut = entries[2]
    assert cut is not None
    os.truncate(pack.path, cut.offset + cut.length // 2)  # a torn append, or damage
    assert layout.held_outputs(data_dir) == [(JOB, 0, 1), (JOB, 1, 2)]
    assert read(data_dir, 1, 2) == [groups_of(1, r) for r in range(3)]
    with pytest.raises(ShuffleError, match="missing"):
        read(data_dir, 2, 3)
    with pytest.raises(CorruptOutput):  # read from the index it held: the bytes are gone
        read(data_dir, 3, 4, reader)
    reader.forget()


def test_a_damaged_header_ends_the_pack_there(data_dir):
    pack, victim = three_entries(data_dir)
    with open(pack.path, "r+b") as f:  # the header's map task
        f.seek(victim.header_offset + 8)
        f.write(b"\x07")
    assert layout.held_outputs(data_dir) == [(JOB, 0, 1)]
    for t in (1, 2):
        with pytest.raises(ShuffleError, match="missing"):
            read(data_dir, t, t + 1)


def test_a_removed_entry_is_found_by_no_reader(data_dir):
    pack = new_pack(data_dir)
    for t in range(3):
        write(data_dir, pack, t, t + 1)
    reader = OutputReader()
    assert read(data_dir, 1, 2, reader)
    reader.remove_packed(layout.map_output_path(data_dir, JOB, 1, 2))
    assert layout.held_outputs(data_dir) == [(JOB, 0, 1), (JOB, 2, 3)]
    for r in (reader, None):
        with pytest.raises(ShuffleError, match="missing"):
            read(data_dir, 1, 2, r)
    assert read(data_dir, 2, 3, reader) == [groups_of(2, r) for r in range(3)]
    reader.remove_packed(layout.map_output_path(data_dir, JOB, 7, 8))  # not there: nothing
    assert layout.held_outputs(data_dir) == [(JOB, 0, 1), (JOB, 2, 3)]
    reader.forget()


def test_a_deleted_pack_is_not_served_from_the_descriptor_held_open(data_dir):
    pack = new_pack(data_dir)
    write(data_dir, pack, 0, 1)
    reader = OutputReader()
    assert read(data_dir, 0, 1, reader)
    os.remove(pack.path)
    with pytest.raises(ShuffleError, match="missing"):
        read(data_dir, 0, 1, reader)
    reader.forget()


def test_a_failed_append_sends_the_next_output_to_a_new_pack(data_dir, monkeypatch):
    pack = new_pack(data_dir)
    write(data_dir, pack, 0, 1)
    first = pack.path
    real_write = os.write

    def torn(fd, data):  # half the entry, then the disk is full
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(packs.os, "write", torn)
    with pytest.raises(OSError):
        write(data_dir, pack, 1, 2)
    monkeypatch.setattr(packs.os, "write", real_write)
    write(data_dir, pack, 2, 3)
    assert pack.path != first
    assert layout.held_outputs(data_dir) == [(JOB, 0, 1), (JOB, 2, 3)]
    assert read(data_dir, 2, 3) == [groups_of(2, r) for r in range(3)]


def test_the_chaos_agents_copy_of_the_pack_header_is_the_packs_own():
    """The agent runs where zmqmr may not be installed, so it keeps its own copy of
    the header; a change to one without the other would make it damage nothing."""
    from zmqmr.chaos import agent

    assert agent.PACK_HEADER.format == packs.HEADER.format
    assert (agent.PACK_LIVE, agent.PACK_REMOVED) == (packs.LIVE, packs.REMOVED)


@pytest.mark.parametrize("watched", [True, False])
def test_a_batch_checks_a_packs_file_once_and_the_next_batch_checks_it_again(
    data_dir, monkeypatch, watched
):
    """Without a watch on the directory (no inotify), each batch checks each file
    once; with one, a batch checks nothing while nothing changed there."""
    if watched and not inotify_works(data_dir):
        pytest.skip("no inotify here")
    pack = new_pack(data_dir)
    for t in range(5):
        write(data_dir, pack, t, 1)
    pack.close()
    reader = OutputReader()
    if not watched:
        reader._watch.fd = -1  # as where inotify cannot be had
    paths = [(layout.map_output_path(data_dir, JOB, t, 1), 0) for t in range(5)]
    first = reader.read_many(1, paths)  # opens each output (the pack once)
    checks = []
    real_fstat = os.fstat

    def fstat(fd):
        checks.append(fd)
        return real_fstat(fd)

    monkeypatch.setattr(os, "fstat", fstat)
    try:
        assert reader.read_many(1, paths) == first
        assert len(checks) == (0 if watched else 1)  # five outputs, one file behind them
        os.remove(pack.path)
        again = reader.read_many(1, paths)
        assert all(isinstance(got, FileNotFoundError) for got in again), again
    finally:
        reader.forget()


def inotify_works(directory: str) -> bool:
    watch = DirWatch()
    try:
        watch.add(directory)
        return watch.generation(directory) >= 0
    finally:
        watch.close()


@pytest.mark.parametrize("change", ["remove", "rename over", "cut", "remove the directory"])
def test_a_change_in_the_directory_is_seen_by_the_next_read_of_every_output_held(data_dir, change):
    """What changed after an output was opened is found at its next read, however
    many reads (of other outputs, which find nothing wrong) came in between."""
    outputs = [layout.map_output_path(data_dir, JOB, t, 1) for t in range(3)]
    for t, path in enumerate(outputs):
        w = MapOutputWriter(path, 3, None, 0, t, 1)  # files of their own
        for r in range(3):
            w.write_segment(groups_of(t, r))
        w.close()
    reader = OutputReader()
    try:
        first = reader.read_many(1, [(p, 0) for p in outputs])
        assert all(type(got) is tuple for got in first)
        victim = outputs[2]
        if change == "remove":
            os.remove(victim)
        elif change == "rename over":
            os.replace(outputs[0], victim)
        elif change == "cut":
            os.truncate(victim, 8)  # partition 1 gone with the rest
        else:
            shutil.rmtree(os.path.dirname(victim))
        if change != "remove the directory":
            assert type(reader.read_many(1, [(outputs[1], 0)])[0]) is tuple  # another one
        (got,) = reader.read_many(1, [(victim, 0)])
        if change == "rename over":  # the new file's, not the old descriptor's
            assert got == read_segment_of(victim) == first[0] != first[2]
        else:
            assert isinstance(got, (FileNotFoundError, CorruptOutput)), got
    finally:
        reader.forget()


def read_segment_of(path: str) -> tuple[int, bytes]:
    alone = OutputReader()
    try:
        return alone.read(path, 1)
    finally:
        alone.forget()


def count_preads(monkeypatch) -> list[int]:
    """The sizes of the reads made with Python's ``os.pread`` from here on."""
    reads: list[int] = []
    real_pread = os.pread

    def pread(fd, n, offset):
        reads.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    return reads


def with_speedups(in_c: bool, monkeypatch) -> None:
    """Reads in C (``_speedups.serve_held``; skipped if it is not built) or in Python."""
    from zmqmr import outputreader

    if in_c and outputreader.speedups is None:
        pytest.skip("zmqmr._speedups not built")
    if not in_c:
        monkeypatch.setattr(outputreader, "speedups", None)


def read_one_by_one(wanted, max_bytes: int) -> list[tuple[int, bytes]]:
    """What ``read_many(1, wanted, max_bytes)`` should give, by single reads."""
    alone = OutputReader()
    want, budget = [], max_bytes
    try:
        for path, off in wanted:
            if max_bytes >= 0 and budget <= 0:
                break
            want.append(alone.read(path, 1, off, budget))
            budget -= len(want[-1][1])
    finally:
        alone.forget()
    return want


def test_a_small_output_is_read_once_when_opened_and_served_from_memory(data_dir, monkeypatch):
    path = layout.map_output_path(data_dir, JOB, 0, 1)
    w = MapOutputWriter(path, 3, None, 0, 0, 1)  # a file of its own
    for r in range(3):
        w.write_segment(groups_of(0, r))
    w.close()
    reader = OutputReader()
    first = [reader.read(path, r) for r in range(3)]
    reads = count_preads(monkeypatch)
    try:
        assert [reader.read(path, r) for r in range(3)] == first and reads == []
        assert [list(local_segment(path, r, reader).groups()) for r in range(3)] == [
            groups_of(0, r) for r in range(3)
        ]
    finally:
        reader.forget()


@pytest.mark.parametrize("in_c", [True, False])
@pytest.mark.parametrize("max_bytes", [-1, 0, 1, 7, 40, 10_000])
def test_a_batch_of_held_outputs_gives_what_reads_one_by_one_give(
    data_dir, max_bytes, in_c, monkeypatch
):
    """In C (``_speedups.serve_held``) or in Python, a batch gives what reads give."""
    with_speedups(in_c, monkeypatch)
    pack = new_pack(data_dir)
    for t in range(3):  # two in a pack, one a file of its own; all held in memory
        write(data_dir, pack, t, 1, 4096 if t < 2 else 0)
    reader = OutputReader()
    wanted = [
        (layout.map_output_path(data_dir, JOB, t, 1), off) for t in range(3) for off in (0, 3)
    ]
    try:
        reader.read_many(1, wanted)  # opened: what follows is served from memory
        assert reader.read_many(1, wanted, max_bytes) == read_one_by_one(wanted, max_bytes)
    finally:
        reader.forget()


def write_large(data_dir: str, task: int, attempt: int) -> str:
    """A map output of 3 partitions in a file of its own, too large to be held in memory."""
    from zmqmr.outputreader import HOLD_BYTES

    path = layout.map_output_path(data_dir, JOB, task, attempt)
    w = MapOutputWriter(path, 3, None, 0, task, attempt)
    for r in range(3):
        w.write_segment([(r, [os.urandom(HOLD_BYTES // 2).hex()])])
    w.close()
    return path


@pytest.mark.parametrize("in_c", [True, False])
@pytest.mark.parametrize("max_bytes", [-1, 0, 1, 40, 70_000])
def test_a_batch_of_outputs_too_large_to_hold_gives_what_reads_give(
    data_dir, max_bytes, in_c, monkeypatch
):
    """Outputs past HOLD_BYTES are read from their files: in C (``serve_held``, with
    no Python ``os.pread``) or in Python, a batch gives what reads one by one give."""
    with_speedups(in_c, monkeypatch)
    paths = [write_large(data_dir, t, 1) for t in range(4)]
    reader = OutputReader()
    wanted = [(path, off) for path in paths for off in (0, 5)]
    try:
        reader.read_many(1, wanted)  # opened and checked: what follows reads the files
        reads = count_preads(monkeypatch)
        got = reader.read_many(1, wanted, max_bytes)
        monkeypatch.undo()
        assert got == read_one_by_one(wanted, max_bytes)
        # in C, only the batch's first read goes through Python (it learns the
        # directory's generation); in Python every one does
        assert len(reads) == (min(1, len(got)) if in_c else len(got))
    finally:
        reader.forget()


@pytest.mark.parametrize("in_c", [True, False])
def test_a_large_output_cut_after_it_was_opened_is_reported_and_the_rest_served(
    data_dir, in_c, monkeypatch
):
    with_speedups(in_c, monkeypatch)
    paths = [write_large(data_dir, t, 1) for t in range(3)]
    reader = OutputReader()
    wanted = [(path, 0) for path in paths]
    try:
        whole = reader.read_many(2, wanted)
        assert all(isinstance(got, tuple) for got in whole)
        _, seg = reader.locate(paths[1], 2)
        os.truncate(paths[1], seg.offset + seg.length // 2)  # partition 2 of task 1 cut
        got = reader.read_many(2, wanted)
        assert got[0] == whole[0] and got[2] == whole[2]
        assert isinstance(got[1], CorruptOutput) and "truncated" in str(got[1])
    finally:
        reader.forget()


@pytest.mark.parametrize("directory", ["/data/job1/", "/tmp/{x}/a}{b/", "/tmp/%d {0} {}/"])
def test_map_output_paths_name_what_map_output_name_names(directory):
    tasks, attempts = [0, 7, 123456, 99999], [1, 0, 3, 12]
    assert layout.map_output_paths(directory, tasks, attempts) == [
        directory + layout.map_output_name(t, a) for t, a in zip(tasks, attempts)
    ]
    assert layout.map_output_paths(directory, [], []) == []
