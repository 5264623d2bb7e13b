"""Recovery in the pure state: what a durable MasterState journals, and what replaying it
through ``handle`` gives a new MasterState. No sockets and no files: the journal's entries
are taken from the Persist commands and handed back as Replayed events.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from test_state import (
    CLIENT,
    A,
    B,
    C,
    Cluster,
    address,
    assigns,
    make_spec,
    of,
)

from zmqmr import recovery
from zmqmr.events import (
    AbortJob,
    AckJob,
    Assign,
    CancelJob,
    Command,
    CommitJob,
    JobAccepted,
    JobCommitted,
    JobRejected,
    Persist,
    PollJob,
    Recovered,
    Replayed,
    SendJobFailed,
    SendProgress,
    SendResult,
    Shutdown,
    StoreResult,
    Tick,
    WorkerReady,
    WorkerSeen,
)
from zmqmr.journal import Entry
from zmqmr.protocol import HeldOutput
from zmqmr.state import MasterState
from zmqmr.tables import DONE, IDLE, RUNNING, WAITING


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a unit test of recovery opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)


class Durable(Cluster):
    """A Cluster whose state journals: every Persist entry is kept in ``journal``."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.state = MasterState(self.state.settings, durable=True)
        self.journal: list[Entry] = []

    def __call__(self, event: Any, at: float | None = None) -> list[Command]:
        cmds = super().__call__(event, at)
        self.journal += [c.entry for c in cmds if isinstance(c, Persist)]
        return [c for c in cmds if not isinstance(c, Persist)]


def restarted(entries: list[Entry], at: float = 100.0, **settings: Any) -> Durable:
    """A new master that replayed ``entries``, at time ``at``."""
    d = Durable(**settings)
    d.now = at
    for e in entries:
        d(Replayed(e))
    d(Recovered())
    return d


def held(a: Assign) -> HeldOutput:
    return HeldOutput(a.job_id, a.task, a.attempt)


def half_done(c: Durable) -> tuple[list[Assign], list[Assign]]:
    """A on two slots, B on one; job j1 of 3 maps and 2 reduces; every map done,
    reduce 0 committed, reduce 1 running. Returns (maps, reduces)."""
    c.register(A, slots=2)
    c.register(B, slots=1)
    maps = assigns(c.submit(spec=make_spec(maps=3, reducers=2)))
    assert sorted(m.worker for m in maps) == [A, A, B]
    reduces: list[Assign] = []
    for m in maps:
        reduces += assigns(c.map_done(m, counters={"words": 1}), "reduce")
    assert len(reduces) == 2
    c.reduce_done(reduces[0], counters={"groups": 5})
    return maps, reduces


def test_a_state_without_a_journal_persists_nothing():
    c = Cluster()
    c.register(A)
    cmds = c.submit()
    assert of(cmds, Persist) == []


def test_facts_are_journaled_before_the_commands_that_act_on_them():
    c = Durable()
    c.register(A)
    cmds = c.state.handle(_submitted(), 0.0)
    kinds = [type(x).__name__ for x in cmds if type(x).__name__ != "Note"]
    # the job's entry (with its blobs) comes before ACCEPTED and before any assignment
    assert kinds.index("Persist") < kinds.index("JobAccepted") < kinds.index("Assign")
    job_entry = next(x.entry for x in cmds if isinstance(x, Persist) and x.entry.kind == "job")
    assert job_entry.blobs == [b"pickled-functions"]
    attempt_entries = [x for x in cmds if isinstance(x, Persist) and x.entry.kind == "attempt"]
    assert len(attempt_entries) == len(of(cmds, Assign))


def _submitted() -> Any:
    from zmqmr.events import JobSubmitted

    return JobSubmitted(CLIENT, "j1", make_spec(), b"pickled-functions", [])


def test_replay_keeps_committed_reduces_and_reuses_the_map_outputs_of_workers_that_return():
    c = Durable()
    maps, reduces = half_done(c)
    d = restarted(c.journal)
    job = d.state.jobs["j1"]
    assert [t.status for t in job.reduces] == [DONE, IDLE]  # committed stays committed
    assert [t.status for t in job.maps] == [WAITING] * 3
    assert job.stats["map_attempts"] == 3 and job.stats["reduce_attempts"] == 2
    # A comes back (a new identity) with its two outputs: no map of A's runs again
    ready = WorkerReady(b"A2", 2, address(A), "host", 100, [held(m) for m in maps if m.worker == A])
    cmds = d(ready)
    assert assigns(cmds, "map") == []
    assert [t.status for t in job.maps].count(DONE) == 2
    # B comes back from the same shuffle address without its output: that map runs again
    b_map = next(m for m in maps if m.worker == B)
    cmds = d.register(B, slots=1, held=[])
    (again,) = assigns(cmds, "map")
    assert again.task == b_map.task and again.attempt > max(a.attempt for a in maps + reduces)
    (r1,) = assigns(d.map_done(again, counters={"words": 1}), "reduce")
    assert r1.task == 1  # reduce 0 is not redone
    cmds = d.reduce_done(r1, counters={"groups": 7})
    (store,) = of(cmds, StoreResult)
    assert store.blobs == [b"result-0", b"result-1"]  # reduce 0's result came from the journal
    reply = d.poll()
    assert isinstance(reply, SendResult)
    assert reply.summary.counters == {"words": 3, "groups": 12}
    assert reply.summary.stats["map_attempts"] == 4  # counted across the restart
    assert reply.summary.stats["reduce_attempts"] == 3


def test_outputs_whose_worker_does_not_return_run_again_after_worker_timeout():
    c = Durable(worker_timeout=10.0)
    maps, _ = half_done(c)
    d = restarted(c.journal, at=100.0, worker_timeout=10.0)
    d.register(C, slots=4)  # a new worker; A and B stay away
    d(WorkerSeen(C), at=105.0)
    assert assigns(d(Tick(), at=105.0)) == []  # still waiting for them
    d(WorkerSeen(C), at=110.5)
    cmds = d(Tick(), at=110.5)
    assert sorted(a.task for a in assigns(cmds, "map")) == [0, 1, 2]
    assert d.state.waiting == {}


def test_a_returning_worker_holding_an_older_attempt_does_not_count():
    c = Durable()
    maps, _ = half_done(c)
    d = restarted(c.journal)
    stale = [HeldOutput(m.job_id, m.task, m.attempt + 1000) for m in maps if m.worker == A]
    cmds = d.register(A, slots=2, held=stale)
    assert sorted(a.task for a in assigns(cmds, "map")) == sorted(
        m.task for m in maps if m.worker == A
    )


def test_an_ended_job_is_remembered_until_a_client_collects_it():
    c = Durable()
    maps, reduces = half_done(c)
    c.reduce_done(reduces[1])
    d = restarted(c.journal)
    assert "j1" in d.state.finished and not d.state.active
    reply = d.poll()
    assert isinstance(reply, SendResult) and reply.summary.returned
    d(AckJob(CLIENT, "j1"))
    assert d.journal[-2] == Entry("collected", {"job": "j1"})
    assert d.journal[-1].kind == "history"  # what zmqmr status keeps showing of it
    e = restarted(c.journal + d.journal)
    (gone,) = e(PollJob(CLIENT, "j1"))
    assert isinstance(gone, SendJobFailed) and gone.error.type == "UnknownJob"


def test_a_job_whose_last_reduce_was_journaled_but_not_its_end_ends_at_recovery():
    c = Durable()
    maps, reduces = half_done(c)
    c.reduce_done(reduces[1])
    assert c.journal[-1].kind == "end"
    d = Durable()
    for e in c.journal[:-1]:  # the end entry was torn off
        d(Replayed(e))
    cmds = d(Recovered())
    assert of(cmds, StoreResult) == [StoreResult("j1", [b"result-0", b"result-1"])]
    assert isinstance(d.poll(), SendResult)


def test_compaction_entries_replay_to_the_same_durable_state():
    c = Durable()
    maps, reduces = half_done(c)
    c.submit("j2", spec=make_spec(maps=1))
    first = restarted(c.journal)
    compacted = recovery.journal_entries(first.state)
    assert len(compacted) < len(c.journal)
    again = restarted(compacted)
    for job_id in ("j1", "j2"):
        a, b = first.state.jobs[job_id], again.state.jobs[job_id]
        assert [t.status for t in a.maps] == [t.status for t in b.maps]
        assert [t.status for t in a.reduces] == [t.status for t in b.reduces]
        assert a.stats == b.stats and a.code == b.code
    assert again.state.last_id == first.state.last_id >= max(r.attempt for r in reduces)


def test_a_durable_master_that_stops_does_not_fail_its_jobs():
    c = Durable()
    c.register(A)
    c.submit()
    cmds = c(Shutdown())
    assert of(cmds, SendJobFailed) == []
    assert "j1" in c.state.active
    plain = Cluster()
    plain.register(A)
    plain.submit()
    (failed,) = of(plain(Shutdown()), SendJobFailed)
    assert failed.error.type == "MasterShutdown"


def test_the_same_submission_replayed_is_accepted_again_not_duplicated():
    c = Durable()
    c.register(A)
    c.submit()
    d = restarted(c.journal)
    d.register(A)
    assert d.submit() == [JobAccepted(CLIENT, "j1")]
    assert len(d.state.jobs) == 1


def test_an_unknown_entry_kind_is_refused():
    d = Durable()
    with pytest.raises(ValueError, match="unknown journal entry"):
        d.state.handle(Replayed(Entry("mystery", {})), 0.0)


def test_an_expired_result_is_dropped_and_named():
    c = Durable(result_ttl=60.0)
    c.register(A)
    maps = assigns(c.submit(spec=make_spec(maps=1)))
    (r0,) = assigns(c.map_done(maps[0]), "reduce")
    c.reduce_done(r0, at=5.0)
    assert isinstance(c.poll(), SendResult)
    assert isinstance(c(PollJob(CLIENT, "j1"), at=60.0)[0], SendResult)
    cmds = c(Tick(), at=70.0)
    assert [type(x).__name__ for x in cmds] == ["DropResult"]
    (reply,) = c(PollJob(CLIENT, "j1"))
    assert isinstance(reply, SendJobFailed) and reply.error.type == "ResultExpired"
    assert "j1" in reply.error.message


def test_running_maps_at_the_restart_run_again_and_their_old_attempt_ids_are_never_reused():
    c = Durable()
    c.register(A, slots=2)
    maps = assigns(c.submit(spec=make_spec(maps=3)))
    c.map_done(maps[0])
    d = restarted(c.journal)
    cmds = d.register(A, slots=3, held=[held(maps[0])])
    again = assigns(cmds, "map")
    assert sorted(a.task for a in again) == [1, 2]
    assert min(a.attempt for a in again) > max(m.attempt for m in maps)
    assert d.state.jobs["j1"].maps[0].status == DONE
    assert {d.state.jobs["j1"].maps[i].status for i in (1, 2)} == {RUNNING}
    assert isinstance(d.poll(), SendProgress)


def test_approved_reduce_attempts_survive_replay_and_compaction_and_the_dir_stays_taken():
    c = Durable()
    c.register(A, slots=2)
    maps = assigns(c.submit(spec=make_spec(maps=1, reducers=2, output_dir="/out")))
    r0, r1 = assigns(c.map_done(maps[0]), "reduce")
    c.reduce_done(r0)
    for d in (
        restarted(c.journal),
        restarted(recovery.journal_entries(restarted(c.journal).state)),
    ):
        job = d.state.jobs["j1"]
        assert [t.approved for t in job.reduces] == [r0.attempt, None]
        (rejected,) = d.submit("j2", spec=make_spec(maps=1, output_dir="/out"))
        assert isinstance(rejected, JobRejected)  # the resumed job still holds /out
    c.reduce_done(r1)
    d = Durable()
    for e in c.journal:  # the master stopped while the job's output committed
        d(Replayed(e))
    cmds = d(Recovered())
    assert of(cmds, CommitJob) == [CommitJob("j1", "/out", [r0.attempt, r1.attempt])]
    d(JobCommitted("j1"))
    assert isinstance(d.poll(), SendResult)


def test_a_job_cancelled_while_its_output_aborts_stays_cancelled_after_a_restart():
    c = Durable()
    c.register(A)
    maps = assigns(c.submit(spec=make_spec(maps=1, output_dir="/out")))
    c.map_done(maps[0])
    assert of(c(CancelJob(CLIENT, "j1")), AbortJob) == [AbortJob("j1", "/out")]
    assert c.journal[-1].kind == "end"  # journaled before the abort is done
    d = Durable()  # the master died before JobAborted
    for e in c.journal:
        d(Replayed(e))
    assert of(d(Recovered()), AbortJob) == [AbortJob("j1", "/out")]  # removed again
    assert "j1" not in d.state.active  # not run again
    reply = d.poll()
    assert isinstance(reply, SendJobFailed) and reply.error.type == "JobCancelled"
    assert of(d.submit("j2", spec=make_spec(maps=1, output_dir="/out")), JobAccepted)
