"""MasterState driven by events and a fake clock; every assertion is on the returned commands.

No sockets and no processes: the clock is a float the test moves by hand, as in
Dask's worker_state_machine tests. ``Note`` commands (decisions for the log) are
set aside by the ``Cluster`` helper, so the commands asserted are the messages.
"""

from __future__ import annotations

import ast
import json
import socket
import sys
from typing import Any

import pytest

from zmqmr import outcomes, policy, protocol, recovery, scheduling, state, views
from zmqmr.config import ClusterSettings
from zmqmr.errors import ProtocolError
from zmqmr.events import (
    AbortJob,
    AckJob,
    Assign,
    AttemptDone,
    AttemptFailed,
    Cancel,
    CancelJob,
    Command,
    CommitJob,
    DropJob,
    DropResult,
    Event,
    FetchFailed,
    JobAborted,
    JobAccepted,
    JobCommitted,
    JobRejected,
    JobSubmitted,
    Note,
    PollJob,
    Relocate,
    Reregister,
    SendJobFailed,
    SendProgress,
    SendResult,
    SendStatus,
    Shutdown,
    StatusRequest,
    StoreResult,
    Tick,
    Welcome,
    WorkerLeft,
    WorkerMisbehaved,
    WorkerReady,
    WorkerSeen,
)
from zmqmr.protocol import (
    AttemptProgress,
    ErrorInfo,
    HeldOutput,
    JobProgress,
    JobSpec,
    Location,
    Report,
    Segment,
    Split,
    WorkerStatus,
)
from zmqmr.state import MasterState

CLIENT = b"client-1"
CODE = b"pickled-functions"
A, B, C = b"A", b"B", b"C"
#: What ``Cluster.map_done`` reports for every partition of a map output.
SIZE, GROUPS = 10, 3


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The state machine is pure: a test here that opens a socket is a mistake."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a unit test of MasterState opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)


def make_spec(maps: int = 2, reducers: int = 1, **overrides: Any) -> JobSpec:
    """A spec shaped like the one zmqmr.job.prepare builds."""
    fields: dict[str, Any] = {
        "name": "wordcount",
        "num_reducers": reducers,
        "splits": [Split("text", f"/data/in-{i}.txt", 0, 100) for i in range(maps)],
        "output_dir": None,
        "max_attempts": 4,
        "speculative": True,
        "skip_bad_records": False,
        "task_timeout": None,
        "has_combiner": False,
    }
    fields.update(overrides)
    return JobSpec(**fields)


def error(type_: str = "ValueError", message: str = "boom") -> ErrorInfo:
    return ErrorInfo(
        type_,
        message,
        f'Traceback (most recent call last):\n  File "job.py", line 3\n{type_}: {message}',
    )


class Cluster:
    """A MasterState, a fake clock, and shorthands for the events workers send.

    Calls return the commands without their ``Note``s, which pile up in ``notes``.
    ``prefetch`` defaults to 0 here: one attempt per free slot, no queueing; and
    ``small_task_prefetch`` to 0: the fake clock's tasks take no time, which would
    otherwise count as small tasks and deepen the queue.
    """

    def __init__(self, **settings: Any) -> None:
        settings.setdefault("heartbeat_interval", 1.0)
        settings.setdefault("worker_timeout", 10.0)
        settings.setdefault("prefetch", 0)
        settings.setdefault("small_task_prefetch", 0)
        self.state = MasterState(ClusterSettings(**settings))
        self.now = 0.0
        self.notes: list[Note] = []

    def __call__(self, event: Event, at: float | None = None) -> list[Command]:
        if at is not None:
            assert at >= self.now, "the fake clock never runs backwards"
            self.now = at
        cmds = self.state.handle(event, self.now)
        self.notes += [c for c in cmds if isinstance(c, Note)]
        return [c for c in cmds if not isinstance(c, Note)]

    def noted(self, text: str) -> list[str]:
        """The notes so far (what, then reason) that mention ``text``."""
        lines = [f"{n.what}: {n.reason}" for n in self.notes]
        return [line for line in lines if text in line]

    def register(
        self,
        worker: bytes,
        slots: int = 1,
        at: float | None = None,
        held: list[HeldOutput] | None = None,
    ) -> list[Command]:
        ready = WorkerReady(worker, slots, address(worker), "host", pid(worker), held or [])
        return self(ready, at)

    def submit(
        self,
        job_id: str = "j1",
        spec: JobSpec | None = None,
        records: list[bytes] | None = None,
        at: float | None = None,
    ) -> list[Command]:
        spec = make_spec() if spec is None else spec
        return self(JobSubmitted(CLIENT, job_id, spec, CODE, records or []), at)

    def map_done(
        self,
        a: Assign,
        counters: dict[str, int] | None = None,
        worker: bytes | None = None,
        at: float | None = None,
    ) -> list[Command]:
        """Every partition gets a non-empty segment of SIZE bytes and GROUPS groups."""
        segments = [Segment(p, SIZE, GROUPS) for p in range(a.spec.num_reducers)]
        report = Report(counters=counters or {}, segments=segments)
        return self(AttemptDone(worker or a.worker, a.attempt, report), at)

    def reduce_done(
        self,
        a: Assign,
        counters: dict[str, int] | None = None,
        at: float | None = None,
        **info: Any,
    ) -> list[Command]:
        report = Report(counters=counters or {}, **info)
        result = f"result-{a.task}".encode()
        return self(AttemptDone(a.worker, a.attempt, report, result), at)

    def fail(
        self, a: Assign, kind: str = "user", record: int | None = None, at: float | None = None
    ) -> list[Command]:
        return self(AttemptFailed(a.worker, a.attempt, kind, error(), record), at)

    def poll(self, job_id: str = "j1") -> Command:
        (reply,) = self(PollJob(CLIENT, job_id))
        return reply

    def stats(self, job_id: str = "j1") -> dict[str, Any]:
        return self.state.job_stats(self.state.jobs[job_id], self.now)

    def progress(self, job_id: str = "j1") -> JobProgress:
        return self.state.progress(self.state.jobs[job_id], self.now)


def address(worker: bytes) -> str:
    return f"tcp://{worker.decode()}.lab:7000"


def pid(worker: bytes) -> int:
    """A's is 100, B's 101, ...: the notes name a worker as ``host:<pid>``."""
    return 100 + worker[0] - A[0]


def assigns(cmds: list[Command], kind: str | None = None) -> list[Assign]:
    return [c for c in cmds if isinstance(c, Assign) and (kind is None or c.kind == kind)]


def of(cmds: list[Command], cls: type) -> list[Any]:
    return [c for c in cmds if isinstance(c, cls)]


def located(m: Assign, size: int = SIZE, groups: int = GROUPS) -> Location:
    """Where map attempt ``m``'s segment is (with the sizes ``Cluster.map_done`` reports)."""
    return Location(m.task, m.attempt, address(m.worker), size, groups)


def relocated(reducer: Assign, map_task: int, rerun: Assign) -> Relocate:
    """The Relocate a running reducer gets once map ``map_task`` reran as ``rerun``."""
    assert rerun.task == map_task
    return Relocate(reducer.worker, reducer.attempt, located(rerun))


def run_maps_on(c: Cluster, cmds: list[Command]) -> list[Command]:
    """Complete every map Assign in ``cmds``, and those they lead to; the last commands."""
    pending = assigns(cmds, "map")
    out: list[Command] = []
    while pending:
        out = c.map_done(pending.pop(0))
        pending += assigns(out, "map")
    return out


# -- registration and liveness ---------------------------------------------------------


def test_registration_is_answered_with_welcome():
    c = Cluster()
    assert c.register(A, slots=2) == [Welcome(A)]
    assert c.state.status(0.0).workers[0].slots == 2


@pytest.mark.parametrize(
    "event",
    [
        WorkerSeen(b"ghost"),
        AttemptDone(b"ghost", 1, Report(segments=[Segment(0, 1, 1)])),
        AttemptFailed(b"ghost", 1, "user", error()),
        FetchFailed(b"ghost", 1, 0, 1, "timeout"),
        WorkerMisbehaved(b"ghost", "bad header"),
    ],
    ids=["heartbeat", "done", "failed", "fetch_failed", "malformed"],
)
def test_message_from_unknown_worker_is_answered_with_reregister(event):
    c = Cluster()
    c.register(A)
    assert c(event) == [Reregister(b"ghost")]


def test_any_message_keeps_a_worker_alive():
    c = Cluster()
    c.register(A, at=0.0)
    c(WorkerSeen(A), at=9.0)
    assert c(Tick(), at=15.0) == []
    assert [w.id for w in c.state.status(c.now).workers] == ["A"]


def test_worker_silent_past_timeout_is_forgotten_and_must_reregister():
    c = Cluster(worker_timeout=10.0)
    c.register(A, at=0.0)
    c(Tick(), at=10.5)
    assert c.state.status(c.now).workers == []
    assert c(WorkerSeen(A)) == [Reregister(A)]


# -- submission and assignment ---------------------------------------------------------


def test_submission_is_accepted_and_one_map_is_assigned_per_free_slot():
    c = Cluster()
    c.register(A, slots=2)
    c.register(B, slots=1)
    cmds = c.submit(spec=make_spec(maps=5))
    assert cmds[0] == JobAccepted(CLIENT, "j1")
    maps = assigns(cmds)
    assert [a.task for a in maps] == [0, 1, 2]
    assert all(a.kind == "map" and a.job_id == "j1" for a in maps)
    assert sorted(a.worker for a in maps) == [A, A, B]
    assert len({a.attempt for a in maps}) == 3
    for a in maps:
        assert a.spec.split == make_spec(maps=5).splits[a.task]
        assert a.spec.num_reducers == 1 and a.spec.num_maps == 5


def test_job_submitted_before_any_worker_starts_when_one_registers():
    c = Cluster()
    assert c.submit(spec=make_spec(maps=3)) == [JobAccepted(CLIENT, "j1")]
    cmds = c.register(A, slots=2)
    assert cmds[0] == Welcome(A)
    assert [(a.worker, a.task) for a in assigns(cmds)] == [(A, 0), (A, 1)]


def test_code_blob_goes_only_with_the_first_assign_of_a_job_to_each_worker():
    c = Cluster()
    c.register(A, slots=2)
    first, second = assigns(c.submit(spec=make_spec(maps=4)))
    assert first.code == CODE
    assert second.worker == A and second.code is None
    (third,) = assigns(c.map_done(first))
    assert third.worker == A and third.code is None
    (fourth,) = assigns(c.register(B))
    assert fourth.worker == B and fourth.code == CODE


def test_records_split_assign_carries_its_records_blob():
    c = Cluster()
    c.register(A, slots=2)
    splits = [Split("records", count=2, first=i, blob=b) for b, i in ((0, 0), (1, 2))]
    cmds = c.submit(spec=make_spec(splits=splits), records=[b"rec0", b"rec1"])
    assert [(a.task, a.records) for a in assigns(cmds)] == [(0, b"rec0"), (1, b"rec1")]


def test_reduces_start_only_after_every_map_and_carry_every_map_location():
    c = Cluster()
    c.register(A, slots=2)
    c.register(B, slots=2)
    pending = assigns(c.submit(spec=make_spec(maps=5, reducers=2)))
    assert len(pending) == 4
    done = []
    while len(done) < 4:
        m = pending.pop(0)
        cmds = c.map_done(m)
        done.append(m)
        assert assigns(cmds, "reduce") == []
        pending += assigns(cmds, "map")
    (m4,) = pending
    reduces = assigns(c.map_done(m4))
    assert sorted(a.task for a in reduces) == [0, 1]
    assert all(a.kind == "reduce" for a in reduces)
    by_task = {m.task: m for m in (*done, m4)}
    for r in reduces:
        assert r.spec.partition == r.task
        assert r.spec.locations == [located(by_task[i]) for i in range(5)]


def test_reduce_locations_name_only_map_outputs_with_data_for_its_partition():
    c = Cluster()
    c.register(A, slots=3)
    m0, m1, m2 = assigns(c.submit(spec=make_spec(maps=3, reducers=3)))
    c(AttemptDone(A, m0.attempt, Report(segments=[Segment(0, 5, 1), Segment(2, 6, 2)])))
    c(AttemptDone(A, m1.attempt, Report(segments=[])))  # a map that emitted nothing
    cmds = c(AttemptDone(A, m2.attempt, Report(segments=[Segment(2, 7, 3)])))
    by_partition = {r.task: r.spec.locations for r in assigns(cmds, "reduce")}
    assert by_partition == {
        0: [located(m0, 5, 1)],
        1: [],
        2: [located(m0, 6, 2), located(m2, 7, 3)],
    }
    assert c.stats()["shuffle_bytes"] == 5 + 6 + 7


def test_map_report_naming_a_partition_the_job_lacks_fails_the_attempt():
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, reducers=2)))
    (retry,) = assigns(c(AttemptDone(A, m0.attempt, Report(segments=[Segment(2, 5, 1)]))))
    assert (retry.task, retry.kind) == (0, "map") and retry.attempt != m0.attempt
    assert c.progress().maps_done == 0
    assert c.stats()["failed_attempts"] == 1


# -- fencing ---------------------------------------------------------------------------


def test_duplicate_completion_of_an_attempt_is_ignored():
    c = Cluster()
    c.register(A, slots=1)
    (m0,) = assigns(c.submit(spec=make_spec(maps=2)))
    (m1,) = assigns(c.map_done(m0, counters={"c": 1}))
    before = c.stats()
    assert c.map_done(m0, counters={"c": 100}) == []
    assert c.stats() == before
    assert c.poll() == SendProgress(CLIENT, "j1", c.progress())
    assert c.progress().maps_done == 1
    assert m1.task == 1


def test_completion_of_an_attempt_reported_by_another_worker_is_ignored():
    c = Cluster()
    c.register(A)
    c.register(B)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2)))
    assert m0.worker == A
    assert c.map_done(m0, worker=B) == []
    progress = c.progress()
    assert progress.maps_done == 0 and progress.running == 2
    c.map_done(m0)
    assert c.progress().maps_done == 1


def test_late_completion_from_a_worker_declared_dead_is_fenced():
    c = Cluster(worker_timeout=10.0)
    c.register(A, at=0.0)
    c.register(B, at=0.0)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2)))
    c(WorkerSeen(B), at=8.0)
    c(Tick(), at=11.0)  # A is dead: m0 waits for a free slot
    assert c.map_done(m0) == [Reregister(A)]
    assert c.progress().maps_done == 0
    # A comes back as a new incarnation: it gets m0 again, and the code again.
    cmds = c.register(A)
    (again,) = assigns(cmds)
    assert (again.worker, again.task, again.code) == (A, 0, CODE)
    assert again.attempt != m0.attempt


# -- job completion --------------------------------------------------------------------


def test_job_completion_returns_result_with_counters_and_drops_job_on_workers():
    c = Cluster()
    c.register(A)
    c.register(B)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2, reducers=2)))
    c.map_done(m0, counters={"words": 3, "zmqmr.map_input_records": 2})
    reduces = assigns(c.map_done(m1, counters={"words": 4, "zmqmr.map_input_records": 1}))
    assert len(reduces) == 2
    assert isinstance(c.poll(), SendProgress)
    c.reduce_done(reduces[0], counters={"groups": 1})
    cmds = c.reduce_done(reduces[1], counters={"groups": 2})
    assert sorted(of(cmds, DropJob), key=lambda d: d.worker) == [DropJob(A, "j1"), DropJob(B, "j1")]
    # the result bytes go to the shell's store, in partition order; the state keeps none
    by_task = {r.task: f"result-{r.task}".encode() for r in reduces}
    assert of(cmds, StoreResult) == [StoreResult("j1", [by_task[0], by_task[1]])]
    assert all(t.result is None for t in c.state.jobs["j1"].reduces)
    reply = c.poll()
    assert isinstance(reply, SendResult) and reply.blobs == []
    assert reply.summary.counters == {"words": 7, "zmqmr.map_input_records": 3, "groups": 3}
    assert reply.summary.returned is True
    assert reply.summary.stats["maps"] == 2 and reply.summary.stats["reduces"] == 2
    # kept until a client acknowledges it, whatever happened to the replies before
    assert isinstance(c.poll(), SendResult)
    assert c(AckJob(CLIENT, "j1")) == [DropResult("j1")]
    again = c.poll()
    assert isinstance(again, SendJobFailed) and again.error.type == "UnknownJob"
    assert "collected already" in again.error.message


def test_long_poll_is_answered_when_the_job_ends_not_before():
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, reducers=1)))
    assert c(PollJob(CLIENT, "j1", wait=5.0), at=1.0) == []  # held
    assert c.state.wake_at() == 6.0
    (r0,) = assigns(c.map_done(m0, at=2.0))
    cmds = c.reduce_done(r0, at=3.0)
    (reply,) = of(cmds, SendResult)
    assert reply.client == CLIENT and reply.job_id == "j1"
    assert of(cmds, StoreResult) == [StoreResult("j1", [b"result-0"])]
    assert c.state.polls == {} and "j1" in c.state.finished  # delivered, kept until acked


def test_long_poll_falls_due_with_progress_and_a_failed_job_answers_at_once():
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, reducers=1, max_attempts=1)))
    other = b"client-2"
    assert c(PollJob(CLIENT, "j1", wait=2.0), at=1.0) == []
    assert c(PollJob(other, "j1", wait=4.0), at=1.5) == []
    assert of(c(Tick(), at=2.9), SendProgress) == []
    (due,) = of(c(Tick(), at=3.0), SendProgress)
    assert due.client == CLIENT and due.progress.maps == 1
    assert c.state.wake_at() == 5.5
    cmds = c.fail(m0, at=4.0)
    (failed,) = of(cmds, SendJobFailed)
    assert failed.client == other and failed.error.type == "ValueError"
    assert c.state.polls == {}


def test_poll_without_wait_is_answered_at_once_and_an_unknown_job_too():
    c = Cluster()
    c.register(A)
    c.submit()
    assert isinstance(c.poll(), SendProgress)
    (reply,) = c(PollJob(CLIENT, "nope", wait=3.0))
    # a master without a journal cannot tell a lost job from a made-up one: it says lost
    assert isinstance(reply, SendJobFailed) and reply.error.type == "JobLost"
    assert "nope" in reply.error.message and "--state-dir" in reply.error.message


def test_job_with_output_dir_succeeds_once_its_approved_attempts_are_committed():
    c = Cluster()
    c.register(A, slots=2)
    cmds = c.submit(spec=make_spec(maps=1, reducers=2, output_dir="/out"))
    r0, r1 = assigns(run_maps_on(c, cmds))
    c.reduce_done(r1, output_file="/out/part-00001")
    assert of(c.reduce_done(r0, output_file="/out/part-00000"), CommitJob) == [
        CommitJob("j1", "/out", [r0.attempt, r1.attempt])
    ]
    progress = c.poll()
    assert isinstance(progress, SendProgress) and progress.progress.state == "committing"
    assert of(c(JobCommitted("j1"), at=2.0), SendResult) == []  # nobody waits: kept
    reply = c.poll()
    assert isinstance(reply, SendResult)
    assert reply.summary.output_files == ["/out/part-00000", "/out/part-00001"]
    assert reply.summary.stats["commit_seconds"] == 2.0


def test_results_too_big_for_the_master_fail_the_job_without_output_dir():
    c = Cluster()
    c.register(A)
    (r0,) = assigns(run_maps_on(c, c.submit(spec=make_spec(maps=1))))
    c.reduce_done(r0, too_big=True)
    reply = c.poll()
    assert isinstance(reply, SendJobFailed)
    assert reply.error.type == "ResultTooLarge"
    assert "output_dir" in reply.error.message


def test_counters_of_a_reexecuted_map_count_once():
    c = Cluster(worker_timeout=10.0)
    c.register(A, at=0.0)
    (m0,) = assigns(c.submit(spec=make_spec(maps=2, speculative=False)))
    (m1,) = assigns(c.register(B))
    c.map_done(m0, counters={"c": 5})
    (r0,) = assigns(c.map_done(m1, counters={"c": 5}))
    assert r0.worker == A
    c(WorkerSeen(A), at=9.0)
    cmds = c(Tick(), at=11.0)  # B dead: its map output is lost; A's reducer makes room
    assert of(cmds, Cancel) == [Cancel(A, r0.attempt)]
    (m1_again,) = assigns(cmds)
    assert (m1_again.task, m1_again.worker) == (1, A)
    (r0_again,) = assigns(c.map_done(m1_again, counters={"c": 5}), "reduce")
    c.reduce_done(r0, counters={"c": 100})  # the preempted attempt is fenced
    c.reduce_done(r0_again, counters={"c": 1})
    reply = c.poll()
    assert isinstance(reply, SendResult)
    assert reply.summary.counters == {"c": 11}
    assert reply.summary.stats["reexecuted_maps"] == 1
    assert reply.summary.stats["preempted_reduces"] == 1


def test_jobs_get_slots_in_order_of_arrival():
    c = Cluster()
    c.register(A, slots=2)
    first = assigns(c.submit("j1", make_spec(maps=3)))
    assert [(a.job_id, a.task) for a in first] == [("j1", 0), ("j1", 1)]
    assert assigns(c.submit("j2", make_spec(maps=2))) == []
    # j1 still has an idle map: it gets the slot before j2
    assert [(a.job_id, a.task) for a in assigns(c.map_done(first[0]))] == [("j1", 2)]
    # j1 has no idle task left (its reduce waits for its maps): j2 may use the slot
    assert [(a.job_id, a.task) for a in assigns(c.map_done(first[1]))] == [("j2", 0)]


# -- worker loss -----------------------------------------------------------------------


def test_running_attempts_of_a_dead_worker_are_reassigned():
    c = Cluster(worker_timeout=10.0)
    c.register(A, at=0.0)
    c.register(B, at=0.0)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=3)))
    assert (m0.worker, m1.worker) == (A, B)
    c(WorkerSeen(B), at=5.0)
    assert assigns(c(Tick(), at=11.0)) == []  # A dead, but B has no free slot
    (again,) = assigns(c.map_done(m1))
    assert (again.task, again.worker) == (0, B)
    assert c.stats()["lost_attempts"] == 1


def test_worker_left_reassigns_its_attempts_at_once():
    c = Cluster()
    c.register(A)
    c.register(B)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2)))
    assert (m0.worker, m1.worker) == (A, B)
    assert assigns(c(WorkerLeft(A))) == []  # B is busy
    assert c.map_done(m0) == [Reregister(A)]
    (again,) = assigns(c.map_done(m1))
    assert (again.task, again.worker) == (0, B)


def test_reregistering_worker_loses_its_old_attempts():
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1)))
    cmds = c.register(A)  # a restarted worker with the same identity
    (again,) = assigns(cmds)
    assert again.task == 0 and again.attempt != m0.attempt and again.code == CODE
    assert c.map_done(m0) == []


def test_dead_worker_completed_maps_rerun_while_completed_reduces_stay_done():
    c = Cluster(worker_timeout=10.0)
    c.register(A, at=0.0)
    (m0,) = assigns(c.submit(spec=make_spec(maps=2, reducers=2, speculative=False)))
    (m1,) = assigns(c.register(B))
    assert (m0.worker, m1.worker) == (A, B)
    c.map_done(m0)
    reduces = {r.worker: r for r in assigns(c.map_done(m1), "reduce")}
    assert set(reduces) == {A, B}
    c.reduce_done(reduces[B])
    c(WorkerSeen(A), at=9.0)
    c.register(C, at=9.5)  # a new worker with a free slot
    cmds = c(Tick(), at=11.0)  # B dead: m1's output is gone; its reduce is committed
    assert of(cmds, Cancel) == []  # a slot is free: no reducer is preempted
    assert [(a.kind, a.task, a.worker) for a in assigns(cmds)] == [("map", 1, C)]
    (m1_again,) = assigns(cmds)
    cmds = c.map_done(m1_again)
    assert assigns(cmds) == []  # the committed reduce is not run again
    assert m1_again.worker == C
    assert of(cmds, Relocate) == [relocated(reduces[A], 1, m1_again)]
    c.reduce_done(reduces[A])
    reply = c.poll()
    assert isinstance(reply, SendResult)
    assert reply.summary.stats["reexecuted_maps"] == 1
    assert reply.summary.stats["reduce_attempts"] == 2


def test_reducers_holding_every_slot_are_preempted_for_a_lost_map():
    c = Cluster(worker_timeout=10.0)
    c.register(A, at=0.0)
    (m0,) = assigns(c.submit(spec=make_spec(maps=2, reducers=2, speculative=False)))
    (m1,) = assigns(c.register(B))
    c.map_done(m0)
    reduces = {r.worker: r for r in assigns(c.map_done(m1), "reduce")}
    c(WorkerSeen(A), at=9.0)
    cmds = c(Tick(), at=11.0)  # B dead with its map output; A's reducer waits for it
    assert of(cmds, Cancel) == [Cancel(A, reduces[A].attempt)]
    (again,) = assigns(cmds)
    assert (again.kind, again.task, again.worker) == ("map", 1, A)
    # once the map output exists again, the preempted reduce (and B's lost one) run again
    (first,) = assigns(c.map_done(again), "reduce")
    (second,) = assigns(c.reduce_done(first), "reduce")
    assert {first.task, second.task} == {0, 1} and reduces[A].task in (0, 1)
    assert c.stats()["preempted_reduces"] == 1
    assert c.stats()["failed_attempts"] == 0
    c.reduce_done(second)
    assert isinstance(c.poll(), SendResult)


def test_lost_attempts_do_not_count_toward_max_attempts():
    c = Cluster(worker_timeout=10.0)
    c.register(A, at=0.0)
    c.register(B, at=0.0)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, max_attempts=1)))
    survivor = B if m0.worker == A else A
    c(WorkerSeen(survivor), at=9.0)
    (second,) = assigns(c(Tick(), at=11.0))
    assert second.worker == survivor
    (third,) = assigns(c.fail(second, kind="lost"))  # the worker lost the job's code
    assert third.worker == survivor and third.code == CODE
    assert not of(c(Tick()), SendJobFailed)
    (r0,) = assigns(c.map_done(third))
    c.reduce_done(r0)
    assert isinstance(c.poll(), SendResult)


def test_misbehaving_worker_is_dropped_and_its_attempts_go_back_to_idle():
    c = Cluster()
    c.register(A)
    c.register(B)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=3)))
    assert (m0.worker, m1.worker) == (A, B)
    cmds = c(WorkerMisbehaved(A, "HEARTBEAT: header is not JSON"))
    assert cmds == [Reregister(A)]  # B is busy: m0 waits
    assert [w.id for w in c.state.status(c.now).workers] == ["B"]
    assert c.noted("malformed message")
    assert c.map_done(m0) == [Reregister(A)]  # fenced: that incarnation is gone
    (again,) = assigns(c.map_done(m1))
    assert again.worker == B
    assert c.stats()["lost_attempts"] == 1 and c.stats()["failed_attempts"] == 0
    # it may register again, and then gets work (and the code) like any new worker
    (fresh,) = assigns(c.register(A))
    assert (fresh.worker, fresh.code) == (A, CODE)
    assert {again.task, fresh.task} == {0, 2}  # m0's task ran again


def test_ready_with_held_outputs_of_jobs_not_running_gets_drop_job():
    c = Cluster()
    c.register(B)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1)))
    held = [
        HeldOutput("gone", 0, 3),
        HeldOutput("j1", 0, 9),  # an earlier incarnation's output of a running job
        HeldOutput("gone", 1, 4),
        HeldOutput("older", 2, 5),
    ]
    assert c.register(A, held=held) == [
        Welcome(A),
        DropJob(A, "gone"),
        DropJob(A, "older"),
    ]
    (r0,) = assigns(c.map_done(m0))
    cmds = c.reduce_done(r0)
    # the running job's files on A are dropped when it ends, though A ran none of it
    assert sorted(of(cmds, DropJob), key=lambda d: d.worker) == [DropJob(A, "j1"), DropJob(B, "j1")]


# -- user failures ---------------------------------------------------------------------


def test_user_failure_is_retried_then_fails_job_with_traceback_and_cancels_the_rest():
    c = Cluster()
    c.register(A, slots=2)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2, max_attempts=3)))
    (retry1,) = assigns(c.fail(m0))
    assert retry1.task == 0
    (retry2,) = assigns(c.fail(retry1))
    assert retry2.task == 0
    cmds = c.fail(retry2)
    assert assigns(cmds) == []
    assert Cancel(A, m1.attempt) in cmds
    assert DropJob(A, "j1") in cmds
    reply = c.poll()
    assert isinstance(reply, SendJobFailed)
    assert reply.error.type == "ValueError"
    assert "boom" in reply.error.message and "3 times" in reply.error.message
    assert reply.error.traceback == error().traceback
    assert c.map_done(m1) == []  # the cancelled attempt's completion is fenced


def test_worker_is_excluded_from_a_job_after_repeated_failures():
    c = Cluster(worker_job_failures=2)
    c.register(A)
    c.register(B)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=3, max_attempts=10)))
    assert (m0.worker, m1.worker) == (A, B)
    (retry,) = assigns(c.fail(m0))
    assert retry.worker == A
    assert assigns(c.fail(retry)) == []  # A is excluded and B is busy: wait
    seen = []
    cmds = c.map_done(m1)
    while assigns(cmds):
        (a,) = assigns(cmds)
        seen.append(a)
        cmds = c.map_done(a) if a.kind == "map" else c.reduce_done(a)
    assert [(a.kind, a.task) for a in seen] == [("map", 0), ("map", 2), ("reduce", 0)]
    assert all(a.worker == B for a in seen)
    assert isinstance(c.poll(), SendResult)
    # the exclusion is per job: a new job runs on A
    assert A in {a.worker for a in assigns(c.submit("j2", make_spec(maps=2)))}


def test_only_worker_is_not_excluded():
    c = Cluster(worker_job_failures=2)
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, max_attempts=5)))
    (r1,) = assigns(c.fail(m0))
    (r2,) = assigns(c.fail(r1))
    (r3,) = assigns(c.fail(r2))
    assert r3.worker == A and r3.task == 0


def test_failed_task_is_retried_before_tasks_that_never_ran():
    # "re-executions and retries first" (Job.idle)
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=2)))
    (retry,) = assigns(c.fail(m0))
    assert retry.task == 0


def test_the_only_worker_keeps_its_running_attempts_when_failures_would_exclude_it():
    # With no other worker left it is not excluded: cancelling its other running
    # attempts only to run them again on it throws their work away.
    c = Cluster(worker_job_failures=2)
    c.register(A, slots=2)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2, max_attempts=10)))
    (retry,) = assigns(c.fail(m0))
    assert retry.task == 0
    cmds = c.fail(retry)
    assert of(cmds, Cancel) == []
    assert [(a.task, a.worker) for a in assigns(cmds)] == [(0, A)]


def test_attempts_cancelled_by_an_exclusion_are_not_counted_as_backups():
    # G never progresses; its first stalled attempt strikes it out of the job
    # (worker_job_failures=1), which cancels both of its attempts: what then runs
    # on A runs alone, so at most the attempt that was named a straggler is a backup.
    G = b"G"
    c = Cluster(worker_job_failures=1)
    c.register(G, slots=2, at=0.0)
    c.register(A, slots=2, at=0.0)
    maps = assigns(c.submit(spec=make_spec(maps=4), at=0.0))
    assert [(m.task, m.worker) for m in maps] == [(0, G), (1, A), (2, G), (3, A)]
    for m in maps:
        if m.worker == A:
            c.map_done(m, at=1.0)
    cmds: list[Command] = []
    for t in (2.0, 3.0, 4.0, 5.0, 6.0):
        c(WorkerSeen(G), at=t)
        c(WorkerSeen(A))
        cmds += c(Tick())
    assert sorted(x.attempt for x in of(cmds, Cancel)) == [maps[0].attempt, maps[2].attempt]
    assert sorted((a.task, a.worker) for a in assigns(cmds)) == [(0, A), (2, A)]
    assert c.stats()["backups_launched"] <= 1


# -- fetch failures --------------------------------------------------------------------


def _reduce_running(c: Cluster) -> tuple[dict[int, Assign], Assign]:
    """Workers A, B, C; two maps done (on A and B); the one reduce running."""
    c.register(A)
    c.register(B)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2)))
    c.register(C)
    c.map_done(m0)
    (r0,) = assigns(c.map_done(m1))
    maps = {m.task: m for m in (m0, m1)}
    return maps, r0


def test_fetch_failure_of_current_map_output_reruns_map_and_relocates_reducer():
    c = Cluster()
    maps, r0 = _reduce_running(c)
    lost = maps[1]
    cmds = c(FetchFailed(r0.worker, r0.attempt, 1, lost.attempt, "checksum"))
    (rerun,) = assigns(cmds)
    assert (rerun.kind, rerun.task) == ("map", 1)
    assert rerun.attempt != lost.attempt
    # a second report about the same output while the map reruns changes nothing
    assert c(FetchFailed(r0.worker, r0.attempt, 1, lost.attempt, "checksum")) == []
    cmds = c.map_done(rerun)
    assert of(cmds, Relocate) == [relocated(r0, 1, rerun)]
    assert assigns(cmds) == []  # the running reducer is not replaced
    assert c.stats()["fetch_failures"] == 2 and c.stats()["reexecuted_maps"] == 1


def test_map_rerun_after_fetch_failure_goes_to_another_worker_when_one_is_free():
    # DESIGN §2: the master "re-executes the map task elsewhere". Rerunning it on
    # the worker whose output could not be fetched can fail the same way forever.
    c = Cluster()
    maps, r0 = _reduce_running(c)
    lost = maps[1]
    cmds = c(FetchFailed(r0.worker, r0.attempt, 1, lost.attempt, "timeout"))
    (rerun,) = assigns(cmds)
    assert rerun.worker != lost.worker


def test_fetch_failure_with_stale_map_attempt_gets_current_location_at_once():
    c = Cluster()
    maps, r0 = _reduce_running(c)
    lost = maps[1]
    (rerun,) = assigns(c(FetchFailed(r0.worker, r0.attempt, 1, lost.attempt, "timeout")))
    c.map_done(rerun)
    cmds = c(FetchFailed(r0.worker, r0.attempt, 1, lost.attempt, "timeout"))
    assert cmds == [relocated(r0, 1, rerun)]
    assert c.stats()["reexecuted_maps"] == 1


# -- task timeout ----------------------------------------------------------------------


def test_task_timeout_cancels_the_attempt_and_retries_it():
    c = Cluster()
    c.register(A, at=0.0)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, task_timeout=5.0)))
    c(WorkerSeen(A), at=4.0)
    assert c(Tick()) == []
    c(WorkerSeen(A), at=6.0)
    cmds = c(Tick())
    assert cmds[0] == Cancel(A, m0.attempt)
    (retry,) = assigns(cmds)
    assert retry.task == 0 and retry.attempt != m0.attempt
    assert c.stats()["timeouts"] == 1
    assert c.map_done(m0) == []  # the cancelled attempt is fenced


def test_task_timeout_counts_toward_max_attempts():
    c = Cluster()
    c.register(A, at=0.0)
    c.submit(spec=make_spec(maps=1, max_attempts=1, task_timeout=5.0))
    c(WorkerSeen(A), at=6.0)
    c(Tick())
    reply = c.poll()
    assert isinstance(reply, SendJobFailed)
    assert reply.error.type == "TaskTimeout"


def test_attempts_timing_out_together_fail_the_job_once():
    c = Cluster()
    c.register(A, slots=2, at=0.0)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2, max_attempts=1, task_timeout=5.0)))
    c(WorkerSeen(A), at=6.0)
    cmds = c(Tick())
    assert sorted(x.attempt for x in of(cmds, Cancel)) == sorted([m0.attempt, m1.attempt])
    assert assigns(cmds) == []
    reply = c.poll()
    assert isinstance(reply, SendJobFailed) and reply.error.type == "TaskTimeout"


# -- speculation -----------------------------------------------------------------------


def seen(c: Cluster, m: Assign, fraction: float, at: float | None = None) -> list[Command]:
    """A heartbeat from ``m``'s worker reporting ``m`` at ``fraction``."""
    return c(WorkerSeen(m.worker, [AttemptProgress(m.attempt, fraction)]), at)


def _three_workers_four_maps(c: Cluster, speculative: bool = True) -> dict[int, Assign]:
    for w in (A, B, C):
        c.register(w, at=0.0)
    maps = assigns(c.submit(spec=make_spec(maps=4, speculative=speculative), at=0.0))
    assert [(m.task, m.worker) for m in maps] == [(0, A), (1, B), (2, C)]
    return {m.task: m for m in maps}


def test_even_tasks_with_progress_reports_launch_no_backup():
    c = Cluster()
    maps = _three_workers_four_maps(c)
    for t, frac in ((3.0, 0.3), (6.0, 0.6), (9.0, 0.9)):
        for m in maps.values():
            seen(c, m, frac, at=t)
    launched = []
    for task in (0, 1, 2):
        launched += assigns(c.map_done(maps[task], at=10.0))
    (m3,) = launched
    assert m3.task == 3
    for t, frac in ((12.0, 0.2), (15.0, 0.5), (19.5, 0.95)):
        launched += assigns(seen(c, m3, frac, at=t))
        launched += assigns(c(Tick()))
        for w in (A, B, C):
            c(WorkerSeen(w))
    assert launched == [m3]
    (r0,) = assigns(c.map_done(m3, at=20.0))
    seen(c, r0, 0.5, at=22.0)
    assert assigns(c(Tick())) == []
    c.reduce_done(r0, at=24.0)
    assert isinstance(c.poll(), SendResult)
    assert c.state.active == {}


def _straggler(c: Cluster, speculative: bool = True) -> tuple[dict[int, Assign], list[Command]]:
    """Map 1 on B crawls; maps 0 and 2 finish at t=10; the commands from then, a Tick's too."""
    maps = _three_workers_four_maps(c, speculative=speculative)
    for t in (3.0, 6.0, 9.0):
        for m in maps.values():
            seen(c, m, 0.01 * t if m.task == 1 else 0.1 * t, at=t)
    cmds = c.map_done(maps[0], at=10.0)
    cmds += c.map_done(maps[2], at=10.0)
    cmds += c(Tick(), at=10.0)  # backups are decided on the clock's tick
    return maps, cmds


def test_straggler_gets_exactly_one_backup_on_another_worker():
    c = Cluster()
    maps, cmds = _straggler(c)
    backups = [a for a in assigns(cmds) if a.task == 1]
    assert len(backups) == 1
    (backup,) = backups
    assert backup.worker != B and backup.attempt != maps[1].attempt
    assert c.noted("backup of map task 1")
    for t in (11.0, 12.0, 13.0):
        for w in (A, B, C):
            c(WorkerSeen(w), at=t)
        assert [a for a in assigns(c(Tick())) if a.task == 1] == []
    assert c.stats()["backups_launched"] == 1


def test_backup_that_finishes_first_wins_and_the_original_is_cancelled():
    c = Cluster()
    maps, cmds = _straggler(c)
    (backup,) = [a for a in assigns(cmds) if a.task == 1]
    out = c.map_done(backup, at=14.0)
    assert Cancel(B, maps[1].attempt) in out
    assert c.map_done(maps[1], at=15.0) == []  # the loser's completion is fenced
    stats = c.stats()
    assert stats["backups_launched"] == 1
    assert stats["backups_won"] == 1
    # every backup either wins or is cancelled: this one won, none was cancelled
    assert stats["backups_cancelled"] == 0


def test_original_that_finishes_first_wins_and_the_backup_is_cancelled():
    c = Cluster()
    maps, cmds = _straggler(c)
    (backup,) = [a for a in assigns(cmds) if a.task == 1]
    out = c.map_done(maps[1], at=14.0)
    assert Cancel(backup.worker, backup.attempt) in out
    assert c.map_done(backup, at=15.0) == []
    stats = c.stats()
    assert (stats["backups_won"], stats["backups_cancelled"]) == (0, 1)


def test_speculative_false_never_launches_a_backup():
    c = Cluster()
    maps, cmds = _straggler(c, speculative=False)
    assert [a for a in assigns(cmds) if a.task == 1] == []
    for t in (12.0, 20.0, 40.0):
        for w in (A, B, C):
            c(WorkerSeen(w), at=t)
        assert [a for a in assigns(c(Tick())) if a.task == 1] == []
    assert c.stats()["backups_launched"] == 0


def test_attempt_whose_worker_stops_progressing_gets_a_backup_after_three_typical_times():
    c = Cluster()
    maps = _three_workers_four_maps(c)
    for t in (3.0, 6.0, 9.0):
        for m in maps.values():
            seen(c, m, 0.1 * t, at=t)  # B's attempt is at 90% at t=9, on pace...
    c.map_done(maps[0], at=10.0)  # typical: 10 s
    c.map_done(maps[2], at=10.0)
    for t in (10.0, 20.0, 38.0):  # ...then B heartbeats without progress
        for w in (A, B, C):
            c(WorkerSeen(w), at=t)
        assert [a for a in assigns(c(Tick())) if a.task == 1] == []
    for w in (A, B, C):
        c(WorkerSeen(w), at=40.0)  # quiet for 31 s: more than three typical times
    (backup,) = [a for a in assigns(c(Tick())) if a.task == 1]
    assert backup.worker != B
    assert c.noted("no progress for 31.0s")


def test_with_nothing_finished_the_typical_time_comes_from_running_attempts_progress():
    c = Cluster()
    c.register(B, at=0.0)
    (slow,) = assigns(c.submit(spec=make_spec(maps=3), at=0.0))
    cmds: list[Command] = []
    for w in (A, C, b"D"):
        cmds += c.register(w, at=5.0)
    others = assigns(cmds)
    assert [(m.task, m.worker) for m in others] == [(1, A), (2, C)]  # D is free for a backup
    seen(c, slow, 0.05, at=8.0)
    for m in others:
        seen(c, m, 0.3)  # 10 s in all, by their rate
    assert assigns(c(Tick())) == []  # 8 s: younger than the typical 10 s
    seen(c, slow, 0.1, at=10.0)  # 100 s in all, by its rate
    for m in others:
        seen(c, m, 0.5)
    (backup,) = assigns(c(Tick()))
    assert (backup.task, backup.worker) == (0, b"D")
    assert c.stats()["backups_launched"] == 1


# -- bad records -----------------------------------------------------------------------


def test_record_that_failed_twice_is_skipped_by_the_next_attempt():
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, skip_bad_records=True)))
    assert m0.spec.skip == []
    (second,) = assigns(c.fail(m0, record=7))
    assert second.spec.skip == []
    (third,) = assigns(c.fail(second, record=7))
    assert third.spec.skip == [7]


def test_failures_pinned_on_a_bad_record_do_not_exhaust_max_attempts():
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, skip_bad_records=True, max_attempts=2)))
    (second,) = assigns(c.fail(m0, record=3))
    (third,) = assigns(c.fail(second, record=3))
    assert third.spec.skip == [3]
    assert not isinstance(c.poll(), SendJobFailed)


def test_a_task_past_max_bad_records_fails_the_job_saying_so(monkeypatch):
    from zmqmr import state

    monkeypatch.setattr(state, "MAX_BAD_RECORDS", 3)
    c = Cluster()
    c.register(A)
    (attempt,) = assigns(c.submit(spec=make_spec(maps=1, skip_bad_records=True, max_attempts=2)))
    for record in range(3):  # three bad records: each skipped after its second failure
        for _ in range(2):
            (attempt,) = assigns(c.fail(attempt, record=record))
    assert attempt.spec.skip == [0, 1, 2]
    assert not isinstance(c.poll(), SendJobFailed)
    c.fail(attempt, record=3)  # a fourth: past what a task may skip
    outcome = c.poll()
    assert isinstance(outcome, SendJobFailed)
    assert "more than the 3 bad records a task may skip" in outcome.error.message


def test_without_skip_bad_records_no_record_is_skipped():
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1)))
    (second,) = assigns(c.fail(m0, record=7))
    (third,) = assigns(c.fail(second, record=7))
    assert third.spec.skip == []


# -- rejected and cancelled jobs -------------------------------------------------------


def submit_frames(spec: Any, records: list[bytes]) -> list[bytes]:
    """A SUBMIT message as it arrives, with ``spec`` as its JSON header's spec."""
    header = json.dumps({"job": "j1", "spec": spec}).encode()
    return [protocol.VERSION, b"SUBMIT", header, CODE, *records]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"num_reducers": 0}, "num_reducers"),
        ({"num_reducers": True}, "num_reducers"),
        ({"num_reducers": "2"}, "num_reducers"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"task_timeout": -1.0}, "task_timeout"),
        ({"task_timeout": 0}, "task_timeout"),
        ({"splits": []}, "at least one split"),
        ({"splits": [{"kind": "tape"}]}, "splits[0].kind"),
        ({"splits": [{"kind": "records", "count": 1, "first": 0, "blob": 2}]}, "blob"),
        ({"output_dir": 7}, "output_dir"),
    ],
)
def test_invalid_spec_is_rejected_naming_the_problem(change, named):
    # A spec is a typed JobSpec, checked whole where the SUBMIT is decoded: an
    # invalid one never becomes an event, so the state never holds it.
    spec = {**make_spec().to_json(), **change}
    frames = submit_frames(spec, records=[b"only-blob-0"])
    with pytest.raises(ProtocolError) as raised:
        protocol.decode(frames)
    assert named in str(raised.value)
    # the same message with the valid spec decodes, and is accepted
    msg = protocol.decode(submit_frames(make_spec().to_json(), [b"only-blob-0"]))
    assert isinstance(msg, protocol.Submit)
    c = Cluster()
    assert c(JobSubmitted(CLIENT, msg.job, msg.spec, msg.blobs[0], msg.blobs[1:])) == [
        JobAccepted(CLIENT, "j1")
    ]


def test_spec_that_is_not_an_object_is_rejected():
    with pytest.raises(ProtocolError, match="spec must be an object"):
        protocol.decode(submit_frames(["not", "a", "dict"], []))


def test_job_id_already_in_use_by_another_job_is_rejected():
    c = Cluster()
    assert c.submit("j1") == [JobAccepted(CLIENT, "j1")]
    (rejected,) = c.submit("j1", spec=make_spec(maps=3))
    assert isinstance(rejected, JobRejected) and "j1" in rejected.error.message
    assert rejected.error.type == "JobSubmitError"


def test_the_same_job_submitted_again_is_accepted_once():
    # a client whose ACCEPTED was lost (the master restarted) sends the same SUBMIT again
    c = Cluster()
    c.register(A, slots=4)
    first = c.submit("j1")
    assert len(assigns(first)) == 2
    assert c.submit("j1") == [JobAccepted(CLIENT, "j1")]  # no second job, no new attempts
    assert len(c.state.jobs) == 1 and len(c.state.attempts) == 2


def test_cancel_job_cancels_its_attempts_and_reports_cancelled():
    c = Cluster()
    c.register(A, slots=2)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=3)))
    cmds = c(CancelJob(CLIENT, "j1"))
    assert sorted(x.attempt for x in of(cmds, Cancel)) == sorted([m0.attempt, m1.attempt])
    assert of(cmds, DropJob) == [DropJob(A, "j1")]
    assert assigns(cmds) == []
    assert c.map_done(m0) == []
    reply = c.poll()
    assert isinstance(reply, SendJobFailed) and reply.error.type == "JobCancelled"
    assert c(CancelJob(CLIENT, "nope")) == []


def test_poll_of_unknown_job_says_it_was_lost_without_a_journal_and_unknown_with_one():
    c = Cluster()
    reply = c.poll("who")
    assert isinstance(reply, SendJobFailed)
    assert reply.error.type == "JobLost" and "who" in reply.error.message
    durable = MasterState(ClusterSettings(), durable=True)
    (reply,) = durable.handle(PollJob(CLIENT, "who"), 0.0)
    assert isinstance(reply, SendJobFailed)
    assert reply.error.type == "UnknownJob" and "never accepted" in reply.error.message


# -- views -----------------------------------------------------------------------------


def test_progress_counts_tasks_by_state():
    c = Cluster()
    c.register(A, slots=2, at=0.0)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=3, reducers=2), at=1.0))
    c.map_done(m0, at=4.0)
    reply = c.poll()
    assert reply == SendProgress(
        CLIENT,
        "j1",
        JobProgress(
            state="running",
            maps=3,
            maps_done=1,
            reduces=2,
            reduces_done=0,
            running=2,
            elapsed=3.0,
            workers=1,
        ),
    )


def test_status_shows_a_workers_queued_attempts_apart_from_its_running_ones():
    c = Cluster(prefetch=1)
    c.register(A, slots=2, at=0.0)
    assert len(assigns(c.submit(spec=make_spec(maps=6), at=0.0))) == 4  # 2 slots, 2 queued
    (w,) = c.state.status(0.0).workers
    assert (w.slots, w.running, w.queued) == (2, 2, 2)


def test_status_lists_workers_and_jobs():
    c = Cluster()
    c.register(A, slots=2, at=0.0)
    c.submit("j1", make_spec(maps=1), at=0.0)
    c.submit("j2", make_spec(maps=1, name="second"), at=0.0)
    c(WorkerSeen(A), at=2.0)
    (reply,) = c(StatusRequest(CLIENT), at=2.5)
    assert isinstance(reply, SendStatus) and reply.client == CLIENT
    (w,) = reply.status.workers
    assert w == WorkerStatus(
        id="A",
        host="host",
        pid=100,
        slots=2,
        running=2,
        queued=0,
        last_heartbeat=0.5,
        shuffle=address(A),
    )
    jobs = reply.status.jobs
    assert [(j.id, j.name, j.progress.state, j.progress.running) for j in jobs] == [
        ("j1", "wordcount", "running", 1),
        ("j2", "second", "running", 1),
    ]
    assert reply.status == c.state.status(2.5)


@pytest.mark.parametrize("event", [object(), Welcome(A)], ids=["object", "a command"])
def test_unknown_event_type_is_a_programming_error(event):
    with pytest.raises(TypeError, match="unknown event"):
        MasterState().handle(event, 0.0)  # type: ignore[arg-type]


def test_map_completion_without_group_counts_still_gives_reducers_a_location():
    c = Cluster()
    c.register(A, slots=2)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, reducers=2)))
    cmds = c(AttemptDone(A, m0.attempt, Report(segments=[Segment(0, 5, 0), Segment(1, 7, 0)])))
    assert len(assigns(cmds, "reduce")) == 2
    (r0, r1) = sorted(assigns(cmds, "reduce"), key=lambda r: r.task)
    assert r0.spec.locations == [Location(0, m0.attempt, address(A), 5, 0)]
    assert r1.spec.locations == [Location(0, m0.attempt, address(A), 7, 0)]


# -- prefetch --------------------------------------------------------------------------


def test_prefetch_queues_one_attempt_per_slot_while_idle_tasks_exceed_free_slots():
    c = Cluster(prefetch=1)
    c.register(A, slots=1)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=4)))  # one runs, one waits behind it
    assert (m0.worker, m1.worker) == (A, A)
    (w,) = c.state.status(c.now).workers
    assert (w.running, w.queued) == (1, 1)
    (m2,) = assigns(c.map_done(m0))  # m1 runs now; m2 takes the queue place
    assert (m2.task, m2.worker) == (2, A)
    # without prefetch the same worker holds one attempt at a time
    plain = Cluster(prefetch=0)
    plain.register(A, slots=1)
    assert [a.task for a in assigns(plain.submit(spec=make_spec(maps=4)))] == [0]


def _small_task_cluster() -> tuple[Cluster, list[Assign]]:
    c = Cluster(prefetch=1, small_task_prefetch=3, small_task_seconds=0.5)
    c.register(A, slots=2)
    first = assigns(c.submit(spec=make_spec(maps=40)))
    assert len(first) == 4  # nothing finished yet: prefetch, one queued per slot
    return c, first


def _finish(c: Cluster, outstanding: list[Assign], n: int, seconds: float | None, step: float):
    """Finish the ``n`` oldest outstanding attempts, each ``seconds`` on its worker, one
    every ``step`` seconds of the master's clock; return (running, queued) on A."""
    for _ in range(n):
        a = outstanding.pop(0)
        report = Report(segments=[Segment(0, SIZE, GROUPS)], seconds=seconds)
        outstanding += assigns(c(AttemptDone(A, a.attempt, report), c.now + step))
    (w,) = c.state.status(c.now).workers
    return w.running, w.queued


def test_small_tasks_queue_deeper_once_enough_of_them_were_reported_small():
    def run(seconds: float | None, step: float) -> list[tuple[int, int]]:
        c, outstanding = _small_task_cluster()
        return [_finish(c, outstanding, n, seconds, step) for n in (7, 1)]

    # 0.1 s each on its worker: one queued per slot until 8 have finished, then 3
    assert run(0.1, step=0.1) == [(2, 2), (2, 6)]
    assert run(0.1, step=5.0) == [(2, 2), (2, 6)]  # however long the master saw them take
    assert run(2.0, step=2.0) == [(2, 2), (2, 2)]  # 2 s each: not small
    assert run(None, step=0.1) == [(2, 2), (2, 2)]  # reports without seconds: not known small


def test_one_long_attempt_ends_small_task_queueing_in_its_phase():
    # a finished attempt of 5 s (10 x small_task_seconds) among 0.1 s ones
    c, outstanding = _small_task_cluster()
    _finish(c, outstanding, 4, 0.1, 0.1)
    _finish(c, outstanding, 1, 5.0, 5.0)
    assert _finish(c, outstanding, 20, 0.1, 0.1) == (2, 2)  # the median is small: no matter
    # a running attempt seen on the tick to have run 5 s on the master's clock, while
    # the finished ones (the fast ones finish first) all look small
    c, outstanding = _small_task_cluster()
    _finish(c, outstanding, 8, 0.1, 0.1)
    c(WorkerSeen(A, [AttemptProgress(a.attempt, 0.0) for a in outstanding[:2]]), at=c.now)
    c(Tick(), at=c.now + 4.0)
    assert not c.state.jobs["j1"].long_seen["map"]
    c(Tick(), at=c.now + 1.0)
    assert c.state.jobs["j1"].long_seen["map"]
    assert _finish(c, outstanding, 6, 0.1, 0.1) == (2, 2)


def test_prefetch_queues_nothing_while_free_slots_could_take_the_idle_tasks():
    # A's slot is free but A is out of the job: one idle task, one free slot,
    # so m0 waits for B's slot rather than queueing behind B's attempt.
    c = Cluster(prefetch=1, worker_job_failures=1)
    c.register(A)
    c.register(B)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2, max_attempts=5)))
    assert (m0.worker, m1.worker) == (A, B)
    assert assigns(c.fail(m0)) == []
    assert c.state.free_slots == 1
    (again,) = assigns(c.map_done(m1))
    assert (again.task, again.worker) == (0, B)


def test_prefetch_never_queues_a_reexecuted_map_behind_running_reducers():
    # With a queue place free on A, the lost map could wait behind A's reducer,
    # which waits for that map: the reducer is preempted instead.
    c = Cluster(prefetch=1, worker_timeout=10.0)
    c.register(A, at=0.0)
    c.register(B, at=0.0)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2, reducers=2, speculative=False)))
    c.map_done(m0)
    reduces = {r.worker: r for r in assigns(c.map_done(m1), "reduce")}
    assert set(reduces) == {A, B}
    c(WorkerSeen(A), at=9.0)
    cmds = c(Tick(), at=11.0)  # B dead with m1's output
    assert of(cmds, Cancel) == [Cancel(A, reduces[A].attempt)]
    (again,) = assigns(cmds)
    assert (again.kind, again.task, again.worker) == ("map", 1, A)
    assert c.state.status(c.now).workers[0].running == 1


# -- placement: the slot cap and load-based spreading ----------------------------------


def test_worker_claiming_too_many_slots_gets_max_worker_slots():
    c = Cluster()
    assert c.register(A, slots=10_000) == [Welcome(A)]
    assert c.state.status(c.now).workers[0].slots == 64
    assert c.noted("claimed 10000")
    assert len(assigns(c.submit(spec=make_spec(maps=100)))) == 64


def test_attempts_spread_to_the_least_loaded_worker():
    c = Cluster()
    c.register(A, slots=4)
    c.register(B, slots=4)
    c.register(C, slots=1)
    maps = assigns(c.submit(spec=make_spec(maps=7)))
    assert [m.worker for m in maps] == [A, B, C, A, B, A, B]
    # a finished task frees its worker, which is then the least loaded
    (nxt,) = assigns(c.submit("j2", make_spec(maps=1)) + c.map_done(maps[0]))
    assert nxt.worker == A


def test_greedy_worker_that_never_finishes_cannot_hold_a_job_forever():
    """G claims 10,000 slots and never finishes anything (while heartbeating);
    A and B finish every attempt within a second."""
    G = b"G"
    c = Cluster()
    c.register(G, slots=10_000, at=0.0)
    c.register(A, slots=1, at=0.0)
    c.register(B, slots=1, at=0.0)
    pending = assigns(c.submit(spec=make_spec(maps=100), at=0.0))
    on_g = [a for a in pending if a.worker == G]
    assert len(on_g) == 64 and len(pending) == 66  # capped; A and B got their share
    result = None
    t = 0.0
    while result is None and t < 300.0:
        t += 1.0
        out: list[Command] = []
        for w in (G, A, B):
            out += c(WorkerSeen(w), at=t)
        healthy = [a for a in pending if a.worker != G]
        pending = [a for a in pending if a.worker == G]
        for a in healthy:
            out += c.map_done(a) if a.kind == "map" else c.reduce_done(a)
        out += c(Tick())
        pending += assigns(out)
        assert max(w.running for w in c.state.status(t).workers) <= 64
        results = of(out, SendResult)
        result = results[0] if results else None
        if result is None and "j1" in c.state.jobs and c.state.jobs["j1"].ended:
            result = c.poll()
    assert isinstance(result, SendResult), result
    stats = result.summary.stats
    assert stats["backups_launched"] >= 2
    (excluded,) = [n for n in c.notes if "gets no more of its tasks" in n.what]
    assert excluded.what == "job j1: worker host:106 gets no more of its tasks"
    assert "stalled there" in excluded.reason
    # G finished nothing, and the job did not wait for G's 64 attempts
    assert stats["map_attempts"] > 100 and t < 100.0


def test_greedy_worker_without_speculation_is_not_backed_up():
    G = b"G"
    c = Cluster()
    c.register(G, slots=10_000, at=0.0)
    c.register(A, slots=1, at=0.0)
    pending = assigns(c.submit(spec=make_spec(maps=10, speculative=False), at=0.0))
    for t in range(1, 60):
        for w in (G, A):
            c(WorkerSeen(w), at=float(t))
        healthy = [a for a in pending if a.worker == A]
        pending = [a for a in pending if a.worker != A]
        out: list[Command] = []
        for a in healthy:
            out += c.map_done(a)
        out += c(Tick())
        pending += assigns(out)
    assert c.stats()["backups_launched"] == 0
    assert c.progress().maps_done == 1  # A's one; G holds the other nine
    assert not c.noted("gets no more")


# -- cost ------------------------------------------------------------------------------


def work_in_handle(c: Cluster) -> list[int]:
    """Count the work done inside ``c.state.handle`` from now on: function calls
    (Python and C, by ``sys.setprofile``) plus lines run (by ``sys.settrace``, so a
    loop that calls nothing still counts). A one-item list that grows as the
    cluster handles events."""
    tally = [0]
    handle = c.state.handle

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            tally[0] += 1

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            tally[0] += 1
        return trace

    def counted(event: Event, now: float) -> list[Command]:
        old_trace, old_profile = sys.gettrace(), sys.getprofile()
        sys.settrace(trace)
        sys.setprofile(profile)
        try:
            return handle(event, now)
        finally:
            sys.setprofile(old_profile)
            sys.settrace(old_trace)

    c.state.handle = counted  # type: ignore[method-assign]
    return tally


def run_one_record_maps(n: int) -> int:
    """Work done by the state to run a job of ``n`` one-record maps on workers that
    finish every attempt at once, ticking between rounds (with queueing, as by default)."""
    c = Cluster(prefetch=1)
    for w in (A, B, C, b"D"):
        c.register(w, slots=4)
    splits = [Split("records", count=1, first=i, blob=i) for i in range(n)]
    records = [b"r%d" % i for i in range(n)]
    tally = work_in_handle(c)
    pending = assigns(c.submit(spec=make_spec(splits=splits, reducers=2), records=records))
    while pending:
        c.now += 0.01
        out: list[Command] = []
        for a in pending:
            out += c.map_done(a) if a.kind == "map" else c.reduce_done(a)
            out += c(WorkerSeen(a.worker))
        out += c(Tick())
        pending = assigns(out)
    (result,) = c(PollJob(CLIENT, "j1"))
    assert isinstance(result, SendResult) and result.summary.stats["map_attempts"] == n
    return tally[0]


def test_work_per_task_does_not_grow_with_the_number_of_tasks():
    small, large = run_one_record_maps(400), run_one_record_maps(800)
    assert large <= 2.3 * small, (small, large)


def tick_calls(n: int) -> int:
    """Work done by one Tick while ``n`` - 1 maps are idle and one runs."""
    c = Cluster()
    c.register(A, at=0.0)
    c.submit(spec=make_spec(maps=n), at=0.0)
    tally = work_in_handle(c)
    c(WorkerSeen(A), at=5.0)
    before = tally[0]
    c(Tick())
    return tally[0] - before


def done_calls_with_queued_jobs(queued: int) -> int:
    """Work done by 50 map completions of a running job while ``queued`` one-map jobs
    wait behind it on a full cluster."""
    c = Cluster(prefetch=1)
    c.register(A, slots=2)
    pending = assigns(c.submit("running", spec=make_spec(maps=500)))
    for i in range(queued):
        c.submit(f"q{i}", spec=make_spec(maps=1))
    tally = work_in_handle(c)
    for _ in range(50):
        done, *pending = pending
        pending += assigns(c.map_done(done))
    assert all(a.job_id == "running" for a in pending)  # in order of arrival
    return tally[0]


def test_work_per_event_does_not_grow_with_the_jobs_queued_behind():
    small, large = done_calls_with_queued_jobs(10), done_calls_with_queued_jobs(1000)
    assert large <= 1.2 * small + 10, (small, large)


def test_a_tick_does_not_scan_idle_tasks():
    small, large = tick_calls(1_000), tick_calls(10_000)
    assert large <= 1.2 * small + 10, (small, large)


@pytest.mark.parametrize("module", [state, scheduling, outcomes, policy, recovery, views])
def test_the_state_machine_modules_import_neither_zmq_nor_time(module):
    assert module.__file__ is not None
    with open(module.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"zmq", "time", "socket", "threading"}, imported


# -- the output commit protocol ------------------------------------------------------


def _output_job(c: Cluster, reducers: int = 1, job_id: str = "j1", out: str = "/out") -> list:
    """A job writing to ``out`` whose maps are done on A: its reduce Assigns."""
    cmds = c.submit(job_id, spec=make_spec(maps=1, reducers=reducers, output_dir=out))
    return assigns(run_maps_on(c, cmds), "reduce")


def test_a_stale_attempt_of_a_worker_declared_dead_cannot_commit_late():
    c = Cluster(worker_timeout=10.0)
    c.register(A, at=0.0)
    c.register(B, at=0.0)
    (r0,) = _output_job(c)
    c(WorkerSeen(B if r0.worker == A else A), at=9.0)
    cmds = c(Tick(), at=11.0)  # r0's worker is declared dead: the reduce runs again
    (again,) = assigns(cmds, "reduce")
    assert again.worker != r0.worker
    (commit,) = of(c.reduce_done(again), CommitJob)
    assert commit.approved == [again.attempt]
    # The stale attempt reports late, before and after the commit: it is fenced both times.
    assert c.reduce_done(r0) == [Reregister(r0.worker)]
    c(JobCommitted("j1"))
    assert c.reduce_done(r0) == [Reregister(r0.worker)]
    reply = c.poll()
    assert isinstance(reply, SendResult)


def test_a_losing_reduce_backup_is_never_approved():
    c = Cluster(stall_heartbeats=5, speculation_min_seconds=1.0)
    for w in (A, B, C):
        c.register(w, at=0.0)
    r0, r1 = _output_job(c, reducers=2)
    c.reduce_done(r0, at=1.0)
    c(WorkerSeen(A), at=20.0)
    c(WorkerSeen(B))
    c(WorkerSeen(C))
    (backup,) = assigns(c(Tick()), "reduce")
    assert backup.task == r1.task and backup.worker != r1.worker
    cmds = c.reduce_done(backup)
    assert Cancel(r1.worker, r1.attempt) in cmds
    assert of(cmds, CommitJob) == [CommitJob("j1", "/out", [r0.attempt, backup.attempt])]
    assert c.reduce_done(r1) == []  # the loser's completion changes nothing


def test_a_second_job_with_a_running_jobs_output_dir_is_rejected_at_submit():
    c = Cluster()
    c.register(A)
    (r0,) = _output_job(c)
    spec = make_spec(maps=1, output_dir="/out/./")  # the same directory, spelt otherwise
    (rejected,) = c.submit("j2", spec=spec)
    assert isinstance(rejected, JobRejected) and rejected.error.type == "JobSubmitError"
    assert "/out" in rejected.error.message and "j1" in rejected.error.message
    c.reduce_done(r0)
    (rejected,) = c.submit("j3", spec=make_spec(maps=1, output_dir="/out"))  # still committing
    assert isinstance(rejected, JobRejected)
    c(JobCommitted("j1"))
    assert of(c.submit("j4", spec=make_spec(maps=1, output_dir="/out")), JobAccepted)
    assert of(c.submit("j5", spec=make_spec(maps=1, output_dir="/elsewhere")), JobAccepted)


def test_a_failed_job_aborts_its_output_before_its_client_hears_and_frees_the_dir():
    c = Cluster()
    c.register(A)
    (r0,) = _output_job(c)
    assert c(PollJob(CLIENT, "j1", wait=30.0)) == []  # a long poll waits for the end
    attempt = r0
    for _ in range(3):
        (attempt,) = assigns(c.fail(attempt), "reduce")
    cmds = c.fail(attempt)  # the fourth failure fails the job
    assert of(cmds, AbortJob) == [AbortJob("j1", "/out")]
    assert of(cmds, CommitJob) == [] and of(cmds, SendJobFailed) == []
    assert isinstance(c.poll(), SendProgress)  # not yet: _temporary is being removed
    assert of(c.submit("j2", spec=make_spec(maps=1, output_dir="/out")), JobRejected)
    (reply,) = c(JobAborted("j1"))
    assert isinstance(reply, SendJobFailed) and reply.error.type == "ValueError"
    assert of(c.submit("j3", spec=make_spec(maps=1, output_dir="/out")), JobAccepted)


def test_a_cancelled_job_aborts_and_a_cancel_once_the_commit_began_is_too_late():
    c = Cluster()
    c.register(A)
    c.register(B)
    (r0,) = _output_job(c)
    cmds = c(CancelJob(CLIENT, "j1"))
    assert of(cmds, Cancel) == [Cancel(r0.worker, r0.attempt)]
    assert of(cmds, AbortJob) == [AbortJob("j1", "/out")]
    assert of(c.reduce_done(r0), CommitJob) == []  # the cancelled attempt is fenced
    c(JobAborted("j1"))
    reply = c.poll()
    assert isinstance(reply, SendJobFailed) and reply.error.type == "JobCancelled"

    (r0,) = _output_job(c, job_id="j2")
    assert of(c.reduce_done(r0), CommitJob)
    assert c(CancelJob(CLIENT, "j2")) == []
    assert c.noted("its output commit has begun")
    c(JobCommitted("j2"))
    assert isinstance(c.poll("j2"), SendResult)


def test_a_failed_commit_fails_the_job_and_aborts_its_output():
    c = Cluster()
    c.register(A)
    (r0,) = _output_job(c)
    c.reduce_done(r0)
    problem = ErrorInfo("OutputCommitError", "PermissionError: [Errno 13] /out")
    assert of(c(JobCommitted("j1", problem)), AbortJob) == [AbortJob("j1", "/out")]
    c(JobAborted("j1"))
    reply = c.poll()
    assert isinstance(reply, SendJobFailed) and reply.error.type == "OutputCommitError"
    assert "PermissionError" in reply.error.message


def test_a_worker_lost_while_the_output_commits_runs_no_map_again():
    c = Cluster()
    c.register(A)
    (r0,) = _output_job(c)
    cmds = c.reduce_done(r0)
    assert of(cmds, DropJob) == [DropJob(A, "j1")]  # map outputs are no longer needed
    c.register(B)
    assert assigns(c(WorkerLeft(A))) == []
    c(JobCommitted("j1"))
    assert isinstance(c.poll(), SendResult)


def test_a_stopping_master_aborts_the_output_of_running_jobs_only():
    c = Cluster()
    c.register(A)
    (r0,) = _output_job(c, job_id="j1", out="/one")
    c.reduce_done(r0)  # j1 commits: an abort would race its commit
    _output_job(c, job_id="j2", out="/two")
    cmds = c(Shutdown())
    assert of(cmds, AbortJob) == [AbortJob("j2", "/two")]
    assert {f.job_id for f in of(cmds, SendJobFailed)} == {"j1", "j2"}


def test_the_parts_of_one_message_are_placed_together_after_the_last(monkeypatch):
    """A worker's message of k completions: taken with schedule=False, then ``settle``,
    the slots they free get the same tasks as when each is taken alone, for one pass
    of the scheduler (k + 1 placements tried) rather than one per completion (2k)."""
    tried = []
    place = scheduling.place
    monkeypatch.setattr(scheduling, "place", lambda *a, **kw: tried.append(1) or place(*a, **kw))
    got = {}
    for together in (False, True):
        c = Cluster()
        c.register(A, slots=4)
        first = assigns(c.submit(spec=make_spec(maps=12)))
        assert len(first) == 4
        tried.clear()
        report = Report(segments=[Segment(0, SIZE, GROUPS)])
        out = []
        for a in first:
            out += c.state.handle(AttemptDone(A, a.attempt, report), c.now, not together)
        if together:
            assert assigns(out) == []  # nothing placed before the message's last part
            out += c.state.settle(c.now)
        got[together] = [(a.kind, a.task) for a in assigns(out)]
        assert len(tried) == (5 if together else 8)
    assert got[True] == got[False] and len(got[True]) == 4


def test_settled_assignments_carry_the_stimulus_of_the_event_that_made_room():
    # one message: a completion (frees a slot), then a heartbeat (changes nothing)
    c = Cluster()
    c.register(A, slots=1)
    (m0,) = assigns(c.submit(spec=make_spec(maps=3)))
    report = Report(segments=[Segment(0, SIZE, GROUPS)])
    c.state.handle(AttemptDone(A, m0.attempt, report, stimulus="done-1"), c.now, False)
    c.state.handle(WorkerSeen(A, stimulus="heartbeat-2"), c.now, False)
    (m1,) = assigns(c.state.settle(c.now))
    assert m1.stimulus == "done-1"
    # the next message starts afresh
    c.state.handle(AttemptDone(A, m1.attempt, report, stimulus="done-3"), c.now, False)
    (m2,) = assigns(c.state.settle(c.now))
    assert m2.stimulus == "done-3"


def test_a_queued_attempt_its_worker_does_not_hold_runs_again_elsewhere():
    # A queues m1 behind m0, but m1's ASSIGN is lost (or A drops what it is given)
    c = Cluster(prefetch=1, worker_job_failures=2)
    c.register(A, slots=1)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=3, max_attempts=1)))
    assert (m0.worker, m1.worker) == (A, A)
    (m2,) = assigns(c.map_done(m0, at=0.5))  # A's slot is free: m1 should be in it now
    c(WorkerSeen(A, []), at=1.0)  # within two heartbeat intervals: may be in flight
    assert m1.attempt in c.state.attempts
    c.register(B, at=1.5)
    cmds = c(WorkerSeen(A, []), at=2.2)
    assert of(cmds, Cancel) == [Cancel(A, m1.attempt)]  # m2 was sent 1.7 s ago: not yet
    (again,) = assigns(cmds)
    assert (again.task, again.worker) == (m1.task, B)  # not a failure: max_attempts=1
    assert c.state.jobs["j1"].stats["lost_attempts"] == 1
    assert c.noted("does not hold it")
    assert c.state.workers[A].failures == {"j1": 1}  # a strike on A


def test_an_assign_still_in_flight_is_spared_until_the_worker_timeout():
    # A's heartbeats say which ASSIGNs it has read (seen): m1's is not among them, so it
    # is in flight (a backlog), not dropped; only past worker_timeout is it given up on.
    c = Cluster(prefetch=1, worker_job_failures=2)
    c.register(A, slots=1)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=3)))
    assert (m0.worker, m1.worker) == (A, A)
    assigns(c.map_done(m0, at=0.5))
    timeout = c.state.settings.worker_timeout
    for t in (2.2, 5.0, timeout - 0.5):
        assert of(c(WorkerSeen(A, [], m0.attempt), at=t), Cancel) == []
        assert m1.attempt in c.state.attempts
    assert c.state.workers[A].failures == {}
    cmds = c(WorkerSeen(A, [], m0.attempt), at=timeout + 0.5)
    assert Cancel(A, m1.attempt) in of(cmds, Cancel)
    assert m1.attempt not in c.state.attempts
    assert c.state.workers[A].failures == {"j1": 1}


def test_an_assign_the_worker_has_read_and_does_not_hold_runs_again_at_once():
    c = Cluster(prefetch=1, worker_job_failures=2)
    c.register(A, slots=1)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=3)))
    assigns(c.map_done(m0, at=0.5))
    assert of(c(WorkerSeen(A, [], m1.attempt), at=1.0), Cancel) == []  # two intervals: not yet
    cmds = c(WorkerSeen(A, [], m1.attempt), at=2.2)  # read, and not held: dropped there
    assert Cancel(A, m1.attempt) in of(cmds, Cancel)
    assert c.noted("does not hold it")


def test_a_worker_listing_every_slot_may_hold_queued_attempts_as_long_as_it_likes():
    c = Cluster(prefetch=1)
    c.register(A, slots=1)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=3)))
    assert (m0.worker, m1.worker) == (A, A)  # m1 waits in A's queue
    for t in (1.0, 5.0, 50.0):
        assert of(c(WorkerSeen(A, [AttemptProgress(m0.attempt, 0.5)]), at=t), Cancel) == []
    assert set(c.state.attempts) == {m0.attempt, m1.attempt}
