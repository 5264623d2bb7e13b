"""The executor's loop run in this process over a fake pipe: what a small attempt costs
in system calls besides writing its output, counted, and that its output and report
stay exact. (The executor process around it is tested with real processes in
tests/integration.)"""

from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Any

import pytest

from zmqmr import executor, layout, mapside, protocol, shuffle, tasklogs, worker
from zmqmr.config import WorkerSettings
from zmqmr.job import Job, make_splits, pickle_functions


def one_pair(key: int, value: int) -> list[tuple[int, int]]:
    return [(value % 3, value)]


def total(key: int, values: Any) -> int:
    return sum(values)


def two_pairs_then_fail(key: int, value: int) -> list[tuple[int, int]]:
    if value == 5:
        raise ValueError("record five")
    return [(value, 1), (value + 1, 1)]


class FakeConn:
    """The executor's end of its pipe: messages to it are queued, messages from it kept."""

    def __init__(self, inbox: list[Any]) -> None:
        self.inbox = list(inbox)
        self.sent: list[Any] = []

    def recv(self) -> Any:
        if not self.inbox:
            raise EOFError
        return self.inbox.pop(0)

    def send(self, msg: Any) -> None:
        self.sent.append(msg)


def attempts(mapper: Any, n: int, job_id: str = "job1", first: int = 1) -> list[Any]:
    job = Job(mapper, total, inputs=[(i, i) for i in range(n)], num_reducers=2)
    job.split_size = 1
    descs, blobs = make_splits(job)
    code = pickle_functions(job)
    out = []
    for i, desc in enumerate(descs):
        spec = protocol.TaskSpec("t", 2, n, None, False, 1 << 20)
        spec.split = protocol.Split.from_json(desc)
        blob = blobs[desc["blob"]]
        out.append(protocol.RunAttempt(first + i, job_id, "map", i, spec, code, blob))
        code = None  # the job's code goes to an executor once
    return out


@pytest.fixture
def counted(monkeypatch):
    """Counts of the calls a small attempt could make per attempt: makedirs, rmtree, trim."""
    counts = {"makedirs": 0, "rmtree": 0, "trim": 0}
    real_makedirs, real_rmtree = os.makedirs, mapside.shutil.rmtree

    def makedirs(*a: Any, **k: Any) -> None:
        counts["makedirs"] += 1
        real_makedirs(*a, **k)

    def rmtree(*a: Any, **k: Any) -> None:
        counts["rmtree"] += 1
        real_rmtree(*a, **k)

    def trim() -> None:
        counts["trim"] += 1

    monkeypatch.setattr(executor.os, "makedirs", makedirs)
    monkeypatch.setattr(mapside.shutil, "rmtree", rmtree)
    monkeypatch.setattr(executor, "release_memory", trim)
    return counts


def run(tmp_path, msgs: list[Any], settings: WorkerSettings | None = None) -> FakeConn:
    data = str(tmp_path / "zmqmr-maps")
    os.mkdir(data)  # not makedirs: the fixture counts those
    conn = FakeConn(msgs)
    ex = executor.Executor(conn, data, "tcp://127.0.0.1:1", settings or WorkerSettings())  # type: ignore[arg-type]
    ex.serve()
    return conn


def test_small_maps_make_their_job_dir_once_and_remove_and_trim_nothing(tmp_path, counted):
    msgs = attempts(one_pair, 50)
    conn = run(tmp_path, msgs)
    assert [type(m) for m in conn.sent] == [protocol.Done] * 50
    assert counted == {"makedirs": 1, "rmtree": 0, "trim": 0}
    data = str(tmp_path / "zmqmr-maps")
    for m, done in zip(msgs, conn.sent):
        path = layout.map_output_path(data, "job1", m.task, m.attempt)
        groups = [[(k, list(vs)) for k, vs in shuffle.local_segment(path, r).groups()]
                  for r in range(2)]  # fmt: skip
        value = m.task  # record i is (i, i)
        assert [g for part in groups for g in part] == [(value % 3, [value])]
        assert done.report.counters["zmqmr.map_input_records"] == 1
        assert [s.partition for s in done.report.segments] == [r for r in (0, 1) if groups[r]]
    # No file per output: every one is an entry of the executor's one pack.
    (pack,) = os.listdir(os.path.join(data, "job1"))
    assert layout.is_pack_name(pack)
    assert layout.held_outputs(data) == [("job1", m.task, m.attempt) for m in msgs]


def test_a_dropped_job_gets_its_dir_again_when_its_attempts_come_back(tmp_path, counted):
    first = attempts(one_pair, 3)
    again = attempts(one_pair, 2, first=10)  # the code comes with the first one again
    data = str(tmp_path / "zmqmr-maps")

    class Removing(FakeConn):  # the worker removes a dropped job's directory
        def recv(self) -> Any:
            msg = super().recv()
            if isinstance(msg, protocol.DropJob):
                layout.remove_paths([layout.job_dir(data, msg.job)])
            return msg

    os.mkdir(data)
    conn = Removing([*first, protocol.DropJob("job1"), *again])
    executor.Executor(conn, data, "tcp://127.0.0.1:1", WorkerSettings()).serve()  # type: ignore[arg-type]
    assert [type(m) for m in conn.sent] == [protocol.Done] * 5
    assert counted["makedirs"] == 2
    (pack,) = os.listdir(layout.job_dir(data, "job1"))  # a new pack: the old one went
    assert layout.is_pack_name(pack)
    assert layout.held_outputs(data) == [("job1", 0, 10), ("job1", 1, 11)]


def test_a_map_that_spills_removes_its_runs_and_is_trimmed(tmp_path, counted, monkeypatch):
    monkeypatch.setattr(executor, "SMALL_BYTES", 1000)  # this split's records are more
    job = Job(one_pair, total, inputs=[(i, i) for i in range(3000)], num_reducers=2)
    job.split_size = 1 << 30  # one task of every record
    descs, blobs = make_splits(job)
    spec = protocol.TaskSpec("t", 2, 1, None, False, 1 << 20)
    spec.split = protocol.Split.from_json(descs[0])
    msg = protocol.RunAttempt(1, "job1", "map", 0, spec, pickle_functions(job), blobs[0])
    conn = run(tmp_path, [msg], WorkerSettings(spill_records=500))
    (done,) = conn.sent
    assert isinstance(done, protocol.Done) and done.report.counters[mapside.merge.SPILLED] > 0
    assert counted["rmtree"] == 1 and counted["trim"] == 1
    data = str(tmp_path / "zmqmr-maps")
    assert not os.path.exists(layout.spill_dir(data, "job1", 0, 1))
    path = layout.map_output_path(data, "job1", 0, 1)
    got: dict[int, list[int]] = {}  # a key's values may come in one group per run
    for r in range(2):
        for k, vs in shuffle.local_segment(path, r).groups():
            got.setdefault(k, []).extend(vs)
    expected = {k: list(range(k, 3000, 3)) for k in range(3)}
    assert {k: sorted(vs) for k, vs in got.items()} == expected


def test_a_failed_small_map_is_reported_and_leaves_no_output(tmp_path, counted):
    msgs = attempts(two_pairs_then_fail, 8)
    conn = run(tmp_path, msgs)
    kinds = [type(m).__name__ for m in conn.sent]
    assert kinds == ["Done"] * 5 + ["Failed"] + ["Done"] * 2
    failed = conn.sent[5]
    assert failed.attempt == msgs[5].attempt and "record five" in failed.error.message
    data = str(tmp_path / "zmqmr-maps")
    assert not os.path.exists(layout.map_output_path(data, "job1", 5, msgs[5].attempt))
    assert not os.path.exists(layout.map_output_path(data, "job1", 5, msgs[5].attempt) + ".tmp")
    held = layout.held_outputs(data)
    assert held == [("job1", m.task, m.attempt) for i, m in enumerate(msgs) if i != 5]


def test_the_log_capture_leaves_the_root_level_alone_unless_user_code_changed_it(tmp_path):
    root = logging.getLogger()
    saved = root.level
    try:
        root.setLevel(logging.INFO)  # as executor.main leaves it
        with tasklogs.Capture(str(tmp_path), "j", "map", 0, 1):
            assert root.level == logging.INFO
        assert root.level == logging.INFO
        with tasklogs.Capture(str(tmp_path), "j", "map", 0, 2):
            root.setLevel(logging.DEBUG)  # user code's logging.basicConfig(level=DEBUG)
        assert root.level == logging.INFO
        root.setLevel(logging.WARNING)
        with tasklogs.Capture(str(tmp_path), "j", "map", 0, 3) as cap:
            assert root.level == logging.INFO  # the user's logging.info reaches the log
            logging.getLogger("user").info("kept")
            cap.flush("done")
        assert root.level == logging.WARNING
        (log,), _ = tasklogs.read_logs(str(tmp_path), "j")
        assert "user INFO kept" in log.log
    finally:
        root.setLevel(saved)


def test_an_attempt_log_written_while_running_is_written_again_at_its_end(tmp_path):
    with tasklogs.Capture(str(tmp_path), "j", "map", 0, 1) as cap:
        print("early")
        cap.flush()  # as maybe_flush does while the attempt runs
        cap.flush("done")  # nothing new since: the file still gets the outcome
    (log,), _ = tasklogs.read_logs(str(tmp_path), "j")
    assert (log.outcome, log.stdout) == ("done", "early\n")


def test_the_worker_asks_its_pipe_for_more_without_losing_a_message_or_the_close():
    parent, child = multiprocessing.Pipe()
    ex = worker.Executor(proc=None, conn=parent)
    assert not ex.more()
    for i in range(3):
        child.send(protocol.AttemptProgress(i, 0.5))
    got = []
    while ex.more():
        got.append(parent.recv().attempt)
    assert got == [0, 1, 2]
    child.close()
    assert ex.more()  # a closed pipe reads as readable: recv then says it is closed
    with pytest.raises(EOFError):
        parent.recv()
    parent.close()
