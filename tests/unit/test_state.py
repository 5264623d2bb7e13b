"""MasterState driven by events and a fake clock; every assertion is on the returned commands.

No sockets and no processes: the clock is a float the test moves by hand, as in
Dask's worker_state_machine tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from zmqmr.config import ClusterSettings
from zmqmr.state import (
    Assign,
    AttemptDone,
    AttemptFailed,
    Cancel,
    CancelJob,
    DropJob,
    FetchFailed,
    JobAccepted,
    JobRejected,
    JobSubmitted,
    MasterState,
    PollJob,
    Relocate,
    Reregister,
    SendJobFailed,
    SendProgress,
    SendResult,
    SendStatus,
    StatusRequest,
    Tick,
    Welcome,
    WorkerLeft,
    WorkerReady,
    WorkerSeen,
)

CLIENT = b"client-1"
CODE = b"pickled-functions"
A, B, C = b"A", b"B", b"C"


def make_spec(maps: int = 2, reducers: int = 1, **overrides: Any) -> dict[str, Any]:
    """A spec shaped like the one zmqmr.job.prepare builds."""
    spec: dict[str, Any] = {
        "name": "wordcount",
        "num_reducers": reducers,
        "splits": [
            {"kind": "text", "path": f"/data/in-{i}.txt", "start": 0, "end": 100}
            for i in range(maps)
        ],
        "output_dir": None,
        "max_attempts": 4,
        "speculative": True,
        "skip_bad_records": False,
        "task_timeout": None,
        "has_combiner": False,
    }
    spec.update(overrides)
    return spec


def error(type_: str = "ValueError", message: str = "boom") -> dict[str, str]:
    return {
        "type": type_,
        "message": message,
        "traceback": (
            f'Traceback (most recent call last):\n  File "job.py", line 3\n{type_}: {message}'
        ),
    }


class Cluster:
    """A MasterState, a fake clock, and shorthands for the events workers send."""

    def __init__(self, **settings: Any) -> None:
        settings.setdefault("heartbeat_interval", 1.0)
        settings.setdefault("worker_timeout", 10.0)
        self.state = MasterState(ClusterSettings(**settings))
        self.now = 0.0

    def __call__(self, event: object, at: float | None = None) -> list[object]:
        if at is not None:
            assert at >= self.now, "the fake clock never runs backwards"
            self.now = at
        return self.state.handle(event, self.now)

    def register(self, worker: bytes, slots: int = 1, at: float | None = None) -> list[object]:
        return self(WorkerReady(worker, slots, address(worker), "host", 100), at)

    def submit(
        self,
        job_id: str = "j1",
        spec: dict[str, Any] | None = None,
        records: list[bytes] | None = None,
        at: float | None = None,
    ) -> list[object]:
        spec = make_spec() if spec is None else spec
        return self(JobSubmitted(CLIENT, job_id, spec, CODE, records or []), at)

    def map_done(
        self,
        a: Assign,
        counters: dict[str, int] | None = None,
        worker: bytes | None = None,
        at: float | None = None,
    ) -> list[object]:
        r = a.spec["num_reducers"]
        info = {"sizes": [10] * r, "groups": [3] * r, "counters": counters or {}}
        return self(AttemptDone(worker or a.worker, a.attempt, info), at)

    def reduce_done(
        self,
        a: Assign,
        counters: dict[str, int] | None = None,
        at: float | None = None,
        **info: Any,
    ) -> list[object]:
        info = {"counters": counters or {}, "too_big": False, "output_file": None, **info}
        result = f"result-{a.task}".encode()
        return self(AttemptDone(a.worker, a.attempt, info, result), at)

    def fail(
        self, a: Assign, kind: str = "user", record: int | None = None, at: float | None = None
    ) -> list[object]:
        return self(AttemptFailed(a.worker, a.attempt, kind, error(), record), at)

    def poll(self, job_id: str = "j1") -> object:
        (reply,) = self(PollJob(CLIENT, job_id))
        return reply

    def stats(self, job_id: str = "j1") -> dict[str, Any]:
        return self.state.job_stats(self.state.jobs[job_id], self.now)


def address(worker: bytes) -> str:
    return f"tcp://{worker.decode()}.lab:7000"


def assigns(cmds: list[object], kind: str | None = None) -> list[Assign]:
    return [c for c in cmds if isinstance(c, Assign) and (kind is None or c.kind == kind)]


def of(cmds: list[object], cls: type) -> list[Any]:
    return [c for c in cmds if isinstance(c, cls)]


def relocated(reducer: Assign, map_task: int, rerun: Assign) -> Relocate:
    """The Relocate a running reducer gets once map ``map_task`` reran as ``rerun``
    (with the output sizes ``Cluster.map_done`` reports)."""
    location = {
        "map_task": map_task,
        "attempt": rerun.attempt,
        "address": address(rerun.worker),
        "size": [10] * rerun.spec["num_reducers"],
        "groups": [3] * rerun.spec["num_reducers"],
    }
    return Relocate(reducer.worker, reducer.attempt, map_task, location)


def run_maps_on(c: Cluster, cmds: list[object]) -> list[object]:
    """Complete every map Assign in ``cmds``, and those they lead to; the last commands."""
    pending = assigns(cmds, "map")
    out: list[object] = []
    while pending:
        out = c.map_done(pending.pop(0))
        pending += assigns(out, "map")
    return out


# -- registration and liveness ---------------------------------------------------------


def test_registration_is_answered_with_welcome():
    c = Cluster()
    assert c.register(A, slots=2) == [Welcome(A)]
    assert c.state.status(0.0)["workers"][0]["slots"] == 2


@pytest.mark.parametrize(
    "event",
    [
        WorkerSeen(b"ghost"),
        AttemptDone(b"ghost", 1, {"sizes": [1]}),
        AttemptFailed(b"ghost", 1, "user", error()),
        FetchFailed(b"ghost", 1, 0, 1, "timeout"),
    ],
    ids=["heartbeat", "done", "failed", "fetch_failed"],
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
    assert [w["id"] for w in c.state.status(c.now)["workers"]] == ["A"]


def test_worker_silent_past_timeout_is_forgotten_and_must_reregister():
    c = Cluster(worker_timeout=10.0)
    c.register(A, at=0.0)
    c(Tick(), at=10.5)
    assert c.state.status(c.now)["workers"] == []
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
        assert a.spec["split"] == make_spec(maps=5)["splits"][a.task]
        assert a.spec["num_reducers"] == 1 and a.spec["num_maps"] == 5


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
    splits = [{"kind": "records", "count": 2, "first": 0, "blob": 0}]
    splits.append({"kind": "records", "count": 2, "first": 2, "blob": 1})
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
        assert r.spec["partition"] == r.task
        assert r.spec["locations"] == [
            {
                "map_task": i,
                "attempt": by_task[i].attempt,
                "address": address(by_task[i].worker),
                "size": [10, 10],
                "groups": [3, 3],
            }
            for i in range(5)
        ]


# -- fencing ---------------------------------------------------------------------------


def test_duplicate_completion_of_an_attempt_is_ignored():
    c = Cluster()
    c.register(A, slots=1)
    (m0,) = assigns(c.submit(spec=make_spec(maps=2)))
    (m1,) = assigns(c.map_done(m0, counters={"c": 1}))
    before = c.stats()
    assert c.map_done(m0, counters={"c": 100}) == []
    assert c.stats() == before
    assert c.poll() == SendProgress(CLIENT, "j1", c.state.progress(c.state.jobs["j1"], c.now))
    assert c.state.progress(c.state.jobs["j1"], c.now)["maps_done"] == 1
    assert m1.task == 1


def test_completion_of_an_attempt_reported_by_another_worker_is_ignored():
    c = Cluster()
    c.register(A)
    c.register(B)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2)))
    assert m0.worker == A
    assert c.map_done(m0, worker=B) == []
    progress = c.state.progress(c.state.jobs["j1"], c.now)
    assert progress["maps_done"] == 0 and progress["running"] == 2
    c.map_done(m0)
    assert c.state.progress(c.state.jobs["j1"], c.now)["maps_done"] == 1


def test_late_completion_from_a_worker_declared_dead_is_fenced():
    c = Cluster(worker_timeout=10.0)
    c.register(A, at=0.0)
    c.register(B, at=0.0)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2)))
    c(WorkerSeen(B), at=8.0)
    c(Tick(), at=11.0)  # A is dead: m0 waits for a free slot
    assert c.map_done(m0) == [Reregister(A)]
    assert c.state.progress(c.state.jobs["j1"], c.now)["maps_done"] == 0
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
    reply = c.poll()
    assert isinstance(reply, SendResult)
    assert reply.summary["counters"] == {"words": 7, "zmqmr.map_input_records": 3, "groups": 3}
    by_task = {r.task: f"result-{r.task}".encode() for r in reduces}
    assert reply.blobs == [by_task[0], by_task[1]]
    assert reply.summary["returned"] is True
    assert reply.summary["stats"]["maps"] == 2 and reply.summary["stats"]["reduces"] == 2
    # delivered once, then forgotten
    again = c.poll()
    assert isinstance(again, SendJobFailed) and again.error["type"] == "UnknownJob"


def test_long_poll_is_answered_when_the_job_ends_not_before():
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, reducers=1)))
    assert c(PollJob(CLIENT, "j1", wait=5.0), at=1.0) == []  # held
    assert c.state.wake_at() == 6.0
    (r0,) = assigns(c.map_done(m0, at=2.0))
    cmds = c.reduce_done(r0, at=3.0)
    (reply,) = of(cmds, SendResult)
    assert reply.client == CLIENT and reply.job_id == "j1" and reply.blobs == [b"result-0"]
    assert c.state.wake_at() is None and "j1" not in c.state.jobs  # delivered, forgotten


def test_long_poll_falls_due_with_progress_and_a_failed_job_answers_at_once():
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, reducers=1, max_attempts=1)))
    other = b"client-2"
    assert c(PollJob(CLIENT, "j1", wait=2.0), at=1.0) == []
    assert c(PollJob(other, "j1", wait=4.0), at=1.5) == []
    assert of(c(Tick(), at=2.9), SendProgress) == []
    (due,) = of(c(Tick(), at=3.0), SendProgress)
    assert due.client == CLIENT and due.progress["maps"] == 1
    assert c.state.wake_at() == 5.5
    cmds = c.fail(m0, at=4.0)
    (failed,) = of(cmds, SendJobFailed)
    assert failed.client == other and failed.error["type"] == "ValueError"
    assert c.state.waiting == {}


def test_poll_without_wait_is_answered_at_once_and_an_unknown_job_too():
    c = Cluster()
    c.register(A)
    c.submit()
    assert isinstance(c.poll(), SendProgress)
    (reply,) = c(PollJob(CLIENT, "nope", wait=3.0))
    assert isinstance(reply, SendJobFailed) and reply.error["type"] == "UnknownJob"


def test_job_with_output_dir_reports_its_part_files():
    c = Cluster()
    c.register(A)
    cmds = c.submit(spec=make_spec(maps=1, reducers=1, output_dir="/out"))
    (r0,) = assigns(run_maps_on(c, cmds))
    c.reduce_done(r0, output_file="/out/part-00000")
    reply = c.poll()
    assert isinstance(reply, SendResult)
    assert reply.summary["output_files"] == ["/out/part-00000"]


def test_results_too_big_for_the_master_fail_the_job_without_output_dir():
    c = Cluster()
    c.register(A)
    (r0,) = assigns(run_maps_on(c, c.submit(spec=make_spec(maps=1))))
    c.reduce_done(r0, too_big=True)
    reply = c.poll()
    assert isinstance(reply, SendJobFailed)
    assert reply.error["type"] == "ResultTooLarge"
    assert "output_dir" in reply.error["message"]


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
    assert reply.summary["counters"] == {"c": 11}
    assert reply.summary["stats"]["reexecuted_maps"] == 1
    assert reply.summary["stats"]["preempted_reduces"] == 1


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
    assert reply.summary["stats"]["reexecuted_maps"] == 1
    assert reply.summary["stats"]["reduce_attempts"] == 2


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
    cmds = c.map_done(again)
    assert sorted(r.task for r in assigns(cmds, "reduce")) == [reduces[A].task]
    assert c.stats()["preempted_reduces"] == 1
    assert c.stats()["failed_attempts"] == 0


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
    assert reply.error["type"] == "ValueError"
    assert "boom" in reply.error["message"] and "3 times" in reply.error["message"]
    assert reply.error["traceback"] == error()["traceback"]
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
    assert reply.error["type"] == "TaskTimeout"


def test_attempts_timing_out_together_fail_the_job_once():
    c = Cluster()
    c.register(A, slots=2, at=0.0)
    m0, m1 = assigns(c.submit(spec=make_spec(maps=2, max_attempts=1, task_timeout=5.0)))
    c(WorkerSeen(A), at=6.0)
    cmds = c(Tick())
    assert sorted(x.attempt for x in of(cmds, Cancel)) == sorted([m0.attempt, m1.attempt])
    assert assigns(cmds) == []
    reply = c.poll()
    assert isinstance(reply, SendJobFailed) and reply.error["type"] == "TaskTimeout"


# -- speculation -----------------------------------------------------------------------


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
            c(WorkerSeen(m.worker, [(m.attempt, frac)]), at=t)
    launched = []
    for task in (0, 1, 2):
        launched += assigns(c.map_done(maps[task], at=10.0))
    (m3,) = launched
    assert m3.task == 3
    for t, frac in ((12.0, 0.2), (15.0, 0.5), (19.5, 0.95)):
        launched += assigns(c(WorkerSeen(m3.worker, [(m3.attempt, frac)]), at=t))
        launched += assigns(c(Tick()))
        for w in (A, B, C):
            c(WorkerSeen(w))
    assert launched == [m3]
    (r0,) = assigns(c.map_done(m3, at=20.0))
    c(WorkerSeen(r0.worker, [(r0.attempt, 0.5)]), at=22.0)
    assert assigns(c(Tick())) == []
    c.reduce_done(r0, at=24.0)
    assert isinstance(c.poll(), SendResult)
    assert c.state.jobs == {}


def _straggler(c: Cluster, speculative: bool = True) -> tuple[dict[int, Assign], list[object]]:
    """Map 1 on B crawls; maps 0 and 2 finish at t=10; returns the commands from then."""
    maps = _three_workers_four_maps(c, speculative=speculative)
    for t in (3.0, 6.0, 9.0):
        for m in maps.values():
            frac = 0.01 * t if m.task == 1 else 0.1 * t
            c(WorkerSeen(m.worker, [(m.attempt, frac)]), at=t)
    cmds = c.map_done(maps[0], at=10.0)
    cmds += c.map_done(maps[2], at=10.0)
    return maps, cmds


def test_straggler_gets_exactly_one_backup_on_another_worker():
    c = Cluster()
    maps, cmds = _straggler(c)
    backups = [a for a in assigns(cmds) if a.task == 1]
    assert len(backups) == 1
    (backup,) = backups
    assert backup.worker != B and backup.attempt != maps[1].attempt
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


# -- bad records -----------------------------------------------------------------------


def test_record_that_failed_twice_is_skipped_by_the_next_attempt():
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, skip_bad_records=True)))
    assert m0.spec["skip"] == []
    (second,) = assigns(c.fail(m0, record=7))
    assert second.spec["skip"] == []
    (third,) = assigns(c.fail(second, record=7))
    assert third.spec["skip"] == [7]


def test_failures_pinned_on_a_bad_record_do_not_exhaust_max_attempts():
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, skip_bad_records=True, max_attempts=2)))
    (second,) = assigns(c.fail(m0, record=3))
    (third,) = assigns(c.fail(second, record=3))
    assert third.spec["skip"] == [3]
    assert not isinstance(c.poll(), SendJobFailed)


def test_without_skip_bad_records_no_record_is_skipped():
    c = Cluster()
    c.register(A)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1)))
    (second,) = assigns(c.fail(m0, record=7))
    (third,) = assigns(c.fail(second, record=7))
    assert "skip" not in third.spec


# -- rejected and cancelled jobs -------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"num_reducers": 0}, "num_reducers"),
        ({"num_reducers": True}, "num_reducers"),
        ({"num_reducers": "2"}, "num_reducers"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"task_timeout": -1.0}, "task_timeout"),
        ({"task_timeout": 0}, "task_timeout"),
        ({"splits": []}, "splits"),
        ({"splits": [{"kind": "tape"}]}, "split"),
        ({"splits": [{"kind": "records", "count": 1, "first": 0, "blob": 2}]}, "blob"),
        ({"output_dir": 7}, "output_dir"),
    ],
)
def test_invalid_spec_is_rejected_naming_the_problem(change, named):
    c = Cluster()
    c.register(A)
    cmds = c.submit(spec=make_spec(**change), records=[b"only-blob-0"])
    assert len(cmds) == 1
    (rejected,) = cmds
    assert isinstance(rejected, JobRejected)
    assert (rejected.client, rejected.job_id) == (CLIENT, "j1")
    assert rejected.error["type"] == "JobSubmitError"
    assert named in rejected.error["message"]
    assert c.state.jobs == {}


def test_spec_that_is_not_an_object_is_rejected():
    c = Cluster()
    (rejected,) = c(JobSubmitted(CLIENT, "j1", ["not", "a", "dict"], CODE, []))  # type: ignore[arg-type]
    assert isinstance(rejected, JobRejected) and "spec" in rejected.error["message"]


def test_job_id_already_in_use_is_rejected():
    c = Cluster()
    assert c.submit("j1") == [JobAccepted(CLIENT, "j1")]
    (rejected,) = c.submit("j1")
    assert isinstance(rejected, JobRejected) and "j1" in rejected.error["message"]


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
    assert isinstance(reply, SendJobFailed) and reply.error["type"] == "JobCancelled"
    assert c(CancelJob(CLIENT, "nope")) == []


def test_poll_of_unknown_job_says_so():
    c = Cluster()
    reply = c.poll("who")
    assert isinstance(reply, SendJobFailed)
    assert reply.error["type"] == "UnknownJob" and "who" in reply.error["message"]


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
        {
            "state": "running",
            "maps": 3,
            "maps_done": 1,
            "reduces": 2,
            "reduces_done": 0,
            "running": 2,
            "elapsed": 3.0,
        },
    )


def test_status_lists_workers_and_jobs():
    c = Cluster()
    c.register(A, slots=2, at=0.0)
    c.submit("j1", make_spec(maps=1), at=0.0)
    c.submit("j2", make_spec(maps=1, name="second"), at=0.0)
    c(WorkerSeen(A), at=2.0)
    (reply,) = c(StatusRequest(CLIENT), at=2.5)
    assert isinstance(reply, SendStatus) and reply.client == CLIENT
    (w,) = reply.status["workers"]
    assert w == {
        "id": "A",
        "host": "host",
        "pid": 100,
        "slots": 2,
        "running": 2,
        "last_heartbeat": 0.5,
        "shuffle": address(A),
    }
    jobs = reply.status["jobs"]
    assert [(j["id"], j["name"], j["state"], j["running"]) for j in jobs] == [
        ("j1", "wordcount", "running", 1),
        ("j2", "second", "running", 1),
    ]
    assert reply.status == c.state.status(2.5)


def test_unknown_event_type_is_a_programming_error():
    with pytest.raises(TypeError, match="unknown event"):
        MasterState().handle(object(), 0.0)


def test_map_completion_without_group_counts_still_gives_reducers_a_location():
    c = Cluster()
    c.register(A, slots=2)
    (m0,) = assigns(c.submit(spec=make_spec(maps=1, reducers=2)))
    cmds = c(AttemptDone(A, m0.attempt, {"sizes": [5, 7], "groups": "junk"}))
    assert len(assigns(cmds, "reduce")) == 2
    (r0, r1) = assigns(cmds, "reduce")
    assert r0.spec["locations"][0]["groups"] == [0, 0]
    assert r0.spec["locations"][0]["size"] == [5, 7]
